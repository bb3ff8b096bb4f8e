//! The two OTLP transports, gRPC and HTTP/protobuf, behind one `export`
//! that says whether a failure is worth retrying (OTLP's rules: gRPC
//! `UNAVAILABLE` and its kin, HTTP 429/502/503/504, a connection refused
//! or timed out).

use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    metrics_service_client::MetricsServiceClient, ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_client::TraceServiceClient, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::Channel;

use super::Protocol;

/// Why an export failed.
#[derive(Debug)]
pub enum Failure {
    /// The collector is away or busy: try again later.
    Retryable(String),
    /// The collector refused the data: sending it again would not help.
    Permanent(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retryable(m) => write!(f, "{m} (will retry)"),
            Failure::Permanent(m) => f.write_str(m),
        }
    }
}

/// A connection to a collector; it connects lazily, so an absent collector
/// is only a failed export.
#[derive(Debug)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc {
        traces: TraceServiceClient<Channel>,
        metrics: MetricsServiceClient<Channel>,
        headers: MetadataMap,
    },
    /// OTLP/HTTP with protobuf bodies.
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        traces: hyper::Uri,
        metrics: hyper::Uri,
        headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    },
}

impl Transport {
    /// A transport to `endpoint` (`http://host:port`; for HTTP the signal
    /// paths `/v1/traces` and `/v1/metrics` are added). Must run inside a
    /// tokio runtime.
    pub fn new(
        endpoint: &str,
        protocol: Protocol,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Self> {
        let endpoint = endpoint.trim_end_matches('/');
        anyhow::ensure!(
            endpoint.starts_with("http://"),
            "--otlp-endpoint {endpoint}: only http:// is supported (send to a local collector for TLS)"
        );
        Ok(match protocol {
            Protocol::Grpc => {
                let channel = Channel::from_shared(endpoint.to_owned())
                    .with_context(|| format!("--otlp-endpoint {endpoint}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(timeout)
                    .connect_lazy();
                let mut map = MetadataMap::new();
                for (k, v) in headers {
                    let key: AsciiMetadataKey =
                        k.parse().with_context(|| format!("--otlp-header {k}"))?;
                    let value: AsciiMetadataValue =
                        v.parse().with_context(|| format!("--otlp-header {k}"))?;
                    map.insert(key, value);
                }
                Transport::Grpc {
                    traces: TraceServiceClient::new(channel.clone()),
                    metrics: MetricsServiceClient::new(channel),
                    headers: map,
                }
            }
            Protocol::HttpProtobuf => {
                let uri = |path: &str| -> Result<hyper::Uri> {
                    format!("{endpoint}{path}")
                        .parse()
                        .with_context(|| format!("--otlp-endpoint {endpoint}"))
                };
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(Duration::from_secs(2)));
                let mut parsed = Vec::new();
                for (k, v) in headers {
                    parsed.push((
                        k.parse().with_context(|| format!("--otlp-header {k}"))?,
                        v.parse().with_context(|| format!("--otlp-header {k}"))?,
                    ));
                }
                Transport::Http {
                    client: Client::builder(TokioExecutor::new()).build(connector),
                    traces: uri("/v1/traces")?,
                    metrics: uri("/v1/metrics")?,
                    headers: parsed,
                }
            }
        })
    }

    /// Sends spans; `Ok` holds how many the collector rejected.
    pub async fn traces(&mut self, req: ExportTraceServiceRequest) -> Result<u64, Failure> {
        let answer: ExportTraceServiceResponse = match self {
            Transport::Grpc {
                traces, headers, ..
            } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                traces.export(r).await.map_err(grpc_failure)?.into_inner()
            }
            Transport::Http {
                client,
                traces,
                headers,
                ..
            } => post(client, traces, headers, req.encode_to_vec()).await?,
        };
        Ok(answer
            .partial_success
            .map_or(0, |p| p.rejected_spans.max(0) as u64))
    }

    /// Sends metrics; `Ok` holds how many points the collector rejected.
    pub async fn metrics(&mut self, req: ExportMetricsServiceRequest) -> Result<u64, Failure> {
        let answer: ExportMetricsServiceResponse = match self {
            Transport::Grpc {
                metrics, headers, ..
            } => {
                let mut r = tonic::Request::new(req);
                *r.metadata_mut() = headers.clone();
                metrics.export(r).await.map_err(grpc_failure)?.into_inner()
            }
            Transport::Http {
                client,
                metrics,
                headers,
                ..
            } => post(client, metrics, headers, req.encode_to_vec()).await?,
        };
        Ok(answer
            .partial_success
            .map_or(0, |p| p.rejected_data_points.max(0) as u64))
    }
}

fn grpc_failure(s: tonic::Status) -> Failure {
    use tonic::Code;
    let message = format!("gRPC {:?}: {}", s.code(), s.message());
    match s.code() {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::OutOfRange
        | Code::DataLoss => Failure::Retryable(message),
        _ => Failure::Permanent(message),
    }
}

/// One OTLP/HTTP request; the answer decoded (an undecodable success body
/// counts as a success with nothing rejected).
async fn post<T: Message + Default>(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &hyper::Uri,
    headers: &[(hyper::header::HeaderName, hyper::header::HeaderValue)],
    body: Vec<u8>,
) -> Result<T, Failure> {
    let mut req = hyper::Request::post(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failure::Permanent(e.to_string()))?;
    for (k, v) in headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let answer = client
        .request(req)
        .await
        .map_err(|e| Failure::Retryable(format!("POST {uri}: {e}")))?;
    let status = answer.status();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Retryable(format!("POST {uri}: {e}")))?
        .to_bytes();
    if status.is_success() {
        return Ok(T::decode(body).unwrap_or_default());
    }
    let message = format!("POST {uri}: HTTP {status}");
    Err(match status.as_u16() {
        429 | 502 | 503 | 504 => Failure::Retryable(message),
        _ => Failure::Permanent(message),
    })
}
