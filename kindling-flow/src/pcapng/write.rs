//! Packets into a pcapng file (pcap-file): one section, one interface per
//! network namespace (link type raw IP, nanosecond timestamps), a comment
//! per packet.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use rustc_hash::FxHashMap;

use super::Packet;

/// Writes [`Packet`]s as pcapng. A namespace's interface is described the
/// first time one of its packets is written (pcapng allows interface
/// blocks anywhere before their first use), so the file streams.
pub struct PcapngWriter<W: Write> {
    inner: PcapNgWriter<W>,
    /// Interface id of each namespace inode seen so far.
    interfaces: FxHashMap<u32, u32>,
    host_netns: Option<u32>,
}

impl<W: Write> std::fmt::Debug for PcapngWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapngWriter")
            .field("interfaces", &self.interfaces.len())
            .finish_non_exhaustive()
    }
}

/// The name and description of the interface of namespace `netns`.
fn describe(netns: u32, host_netns: Option<u32>, first: &Packet) -> (String, String) {
    if netns == 0 {
        (
            "kindling".to_owned(),
            "socket traffic seen by Kindling's probe, as packets (the capture does not name \
             network namespaces)"
                .to_owned(),
        )
    } else if Some(netns) == host_netns {
        (
            "host".to_owned(),
            format!("the host's network namespace, net:[{netns}], as Kindling's probe saw it"),
        )
    } else {
        (
            format!("netns-{netns}"),
            format!(
                "network namespace net:[{netns}]; first packet: {}",
                first.comment
            ),
        )
    }
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section header to `w`.
    pub fn new(w: W) -> std::io::Result<Self> {
        let inner = PcapNgWriter::new(w).map_err(std::io::Error::other)?;
        Ok(Self {
            inner,
            interfaces: FxHashMap::default(),
            host_netns: None,
        })
    }

    /// Names the interface of namespace `netns` (the capture header's
    /// `host_netns`) `host`.
    #[must_use]
    pub fn with_host_netns(mut self, netns: Option<u32>) -> Self {
        self.host_netns = netns;
        self
    }

    /// Interfaces described so far.
    pub fn interfaces(&self) -> usize {
        self.interfaces.len()
    }

    /// The interface id of `p`'s namespace, described on first use.
    fn interface(&mut self, p: &Packet) -> std::io::Result<u32> {
        if let Some(&id) = self.interfaces.get(&p.netns) {
            return Ok(id);
        }
        let (name, description) = describe(p.netns, self.host_netns, p);
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 0,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(name)),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(description)),
                // timestamps in nanoseconds (pcap-file writes them so)
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.inner
            .write_pcapng_block(interface)
            .map_err(std::io::Error::other)?;
        let id = self.interfaces.len() as u32;
        self.interfaces.insert(p.netns, id);
        Ok(id)
    }

    /// Appends one packet.
    pub fn write(&mut self, p: &Packet) -> std::io::Result<()> {
        let interface_id = self.interface(p)?;
        let block = EnhancedPacketBlock {
            interface_id,
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
