//! Who an output belongs to: the [`Enricher`] trait. Enrichers read
//! files, caches or APIs, so they live outside this sans-IO crate:
//! `kindling-k8s` implements the trait for processes and containers (from
//! `/proc`) and for pods, workloads, services and nodes.

use crate::record::Output;

/// Adds resource attributes (OpenTelemetry names: `process.pid`,
/// `container.id`, `k8s.pod.name`, …) to the outputs of the pipeline.
/// Enrichers run outside the sans-IO pipeline: they may read files or
/// caches, and chain (a pair of enrichers is one, the first runs first).
///
/// # Examples
///
/// ```
/// use kindling_flow::enrich::Enricher;
/// use kindling_flow::Output;
///
/// struct Node(&'static str);
///
/// impl Enricher for Node {
///     fn enrich(&mut self, output: &mut Output) {
///         let resource = match output {
///             Output::Exchange(x) => &mut x.resource,
///             Output::Tcp(t) => &mut t.resource,
///         };
///         resource.insert("k8s.node.name", self.0.to_owned());
///     }
/// }
///
/// let mut enricher = (Node("node-1"), Node("node-2"));
/// // for output in &mut outputs { enricher.enrich(output) }
/// # let _ = &mut enricher;
/// ```
pub trait Enricher {
    /// Adds what it knows about the output's process to `resource`.
    fn enrich(&mut self, output: &mut Output);
}

impl<A: Enricher, B: Enricher> Enricher for (A, B) {
    fn enrich(&mut self, output: &mut Output) {
        self.0.enrich(output);
        self.1.enrich(output);
    }
}
