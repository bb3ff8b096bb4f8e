//! `kindling watch` in a terminal: a live view a person reads at a glance
//! (ratatui) — exchanges like a browser's network panel, the service map,
//! TCP health and DNS, with filters, sorting, pause and the detail of one
//! exchange. Loss and truncation stay on the bottom line.

mod state;
mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use kindling_flow::enrich::Enricher;
use kindling_flow::Driver;
use kindling_probe::Probe;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use crate::live::boottime_now;
use crate::output::losses_line;
use state::crossterm_key::Key;
use state::State;

/// How often the screen is redrawn while traffic flows.
const FRAME: Duration = Duration::from_millis(250);

/// Runs the view until `q`, Ctrl-C, SIGTERM or `until`.
pub fn run(
    probe: &mut Probe,
    driver: &mut Driver,
    enricher: &mut dyn Enricher,
    stop: &AtomicBool,
    until: Option<Instant>,
) -> Result<()> {
    let mut terminal = ratatui::init();
    let result = run_on(&mut terminal, probe, driver, enricher, stop, until);
    ratatui::restore();
    result
}

fn run_on(
    terminal: &mut ratatui::DefaultTerminal,
    probe: &mut Probe,
    driver: &mut Driver,
    enricher: &mut dyn Enricher,
    stop: &AtomicBool,
    until: Option<Instant>,
) -> Result<()> {
    let mut state = State::default();
    let mut outputs = Vec::new();
    let mut drawn = Instant::now() - FRAME;
    while !stop.load(Ordering::Relaxed) && until.is_none_or(|t| Instant::now() < t) {
        probe.poll(Duration::from_millis(50), |ev| {
            driver.push(&ev, &mut outputs);
        })?;
        driver.tick(boottime_now(), &mut outputs);
        let losses = probe.losses()?;
        driver.note_lost_total(losses.lost_records());
        for o in &mut outputs {
            enricher.enrich(o);
            state.add(o);
        }
        driver.reuse(&mut outputs);
        state.losses = format!("{} events; {}", probe.received(), losses_line(&losses));
        let mut input = false;
        while event::poll(Duration::ZERO)? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
                        return Ok(());
                    }
                    let key = match k.code {
                        KeyCode::Char(c) => Key::Char(c),
                        KeyCode::Enter => Key::Enter,
                        KeyCode::Esc => Key::Esc,
                        KeyCode::Backspace => Key::Backspace,
                        KeyCode::Tab => Key::Tab,
                        KeyCode::Up => Key::Up,
                        KeyCode::Down => Key::Down,
                        _ => continue,
                    };
                    if state.key(key) {
                        return Ok(());
                    }
                    input = true;
                }
                Event::Resize(..) => input = true,
                _ => {}
            }
        }
        if input || drawn.elapsed() >= FRAME {
            terminal.draw(|f| view::render(f, &state))?;
            drawn = Instant::now();
        }
    }
    Ok(())
}
