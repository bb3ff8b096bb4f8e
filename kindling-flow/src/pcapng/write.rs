//! Packets into a pcapng file (pcap-file): one section, one interface of
//! link type raw IP with nanosecond timestamps, a comment per packet.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use super::Packet;

/// Writes [`Packet`]s as pcapng.
pub struct PcapngWriter<W: Write> {
    inner: PcapNgWriter<W>,
}

impl<W: Write> std::fmt::Debug for PcapngWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PcapngWriter")
    }
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header and the interface to `w`.
    pub fn new(w: W) -> std::io::Result<Self> {
        let mut inner = PcapNgWriter::new(w).map_err(std::io::Error::other)?;
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed("kindling")),
                InterfaceDescriptionOption::IfDescription(Cow::Borrowed(
                    "socket traffic seen by Kindling's probe, as packets",
                )),
                // timestamps in nanoseconds (pcap-file writes them so)
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        inner
            .write_pcapng_block(interface)
            .map_err(std::io::Error::other)?;
        Ok(Self { inner })
    }

    /// Appends one packet.
    pub fn write(&mut self, p: &Packet) -> std::io::Result<()> {
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(p.ts_ns),
            original_len: p.original_len,
            data: Cow::Borrowed(&p.bytes),
            options: vec![EnhancedPacketOption::Comment(Cow::Borrowed(&p.comment))],
        };
        self.inner
            .write_pcapng_block(block)
            .map(drop)
            .map_err(std::io::Error::other)
    }

    /// The writer, flushed.
    pub fn into_inner(self) -> std::io::Result<W> {
        let mut w = self.inner.into_inner();
        w.flush()?;
        Ok(w)
    }
}
