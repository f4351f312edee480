//! `edgechat bench attachments`: uploads files of one size through `AttachmentService` (the
//! client library's `upload`: 256 KiB chunks, each a durable change) and downloads them back
//! (`Download`), `concurrency` users at a time. The figures behind the attachments section of
//! docs/PERFORMANCE.md: throughput each way, the last chunk's latency (it hashes the whole
//! file and moves it to its content in the same transaction), the database file per MiB
//! stored, and the server's CPU and memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Server, Target, mib, quantile, rss};
use crate::client;
use crate::proto;

/// `bench attachments` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct FilesArgs {
    /// Size of each file, KiB.
    #[arg(long, default_value_t = 10_240, value_parser = clap::value_parser!(u32).range(1..=102_400))]
    pub size_kib: u32,
    /// Files uploaded (and downloaded), all different (no content is stored twice).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub files: u32,
    /// Users uploading (then downloading) at once, each on its own connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct FilesReport {
    /// Always `attachments`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// Bytes per file.
    pub file_bytes: u64,
    /// Files uploaded.
    pub files: u32,
    /// Users at once.
    pub concurrency: u32,
    /// Upload: MiB/s, all users together.
    pub upload_mib_per_sec: f64,
    /// The chunk that completes a file, ms.
    pub last_chunk_p50_ms: f64,
    /// Same, ms.
    pub last_chunk_max_ms: f64,
    /// Server CPU per MiB uploaded, ms.
    pub upload_cpu_ms_per_mib: Option<f64>,
    /// Download: MiB/s, all users together.
    pub download_mib_per_sec: f64,
    /// Server CPU per MiB downloaded, ms.
    pub download_cpu_ms_per_mib: Option<f64>,
    /// Database file growth per MiB stored (a server this run started).
    pub file_growth_per_mib: Option<f64>,
    /// Server RSS after the run, MiB.
    pub server_rss_mib: Option<f64>,
    /// Server peak RSS (VmHWM), MiB.
    pub server_peak_rss_mib: Option<f64>,
}

/// Bytes that do not repeat between files (xorshift from the file's number).
fn content(n: u32, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (u64::from(n) + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Uploads `bytes` chunk by chunk, timing the chunk that completes it.
async fn upload_timed(
    c: &mut proto::attachment_service_client::AttachmentServiceClient<client::Authed>,
    name: &str,
    bytes: &[u8],
) -> Result<(String, Duration), tonic::Status> {
    use sha2::Digest;
    let sha256 = sha2::Sha256::digest(bytes).to_vec();
    let start = proto::StartUploadRequest { name: name.into(), size: bytes.len() as u64, sha256 };
    let mut up = c.start_upload(start).await?.into_inner();
    loop {
        let from = up.received as usize;
        let to = (from + crate::attachments::MAX_CHUNK_BYTES).min(bytes.len());
        let chunk = proto::UploadChunkRequest {
            upload_id: up.upload_id.clone(),
            offset: from as u64,
            data: bytes[from..to].to_vec(),
        };
        let sent = Instant::now();
        up = c.upload_chunk(chunk).await?.into_inner();
        if let Some(a) = up.attachment {
            return Ok((a.id, sent.elapsed()));
        }
    }
}

/// Runs the scenario.
pub async fn run(args: &FilesArgs) -> Result<FilesReport, BenchError> {
    let size = u64::from(args.size_kib) * 1024;
    let total = size * u64::from(args.files);
    let max = size.to_string();
    let quota = total.max(size).saturating_mul(2).to_string();
    let server = Server::start(
        &args.target,
        &[
            ("EDGECHAT_ATTACHMENTS_MAX_BYTES", &max),
            ("EDGECHAT_ATTACHMENTS_PER_USER_BYTES", &quota),
        ],
    )?;
    let users = super::register_many(&server, "uploader-", args.concurrency, 16).await?;
    let db = || {
        server
            .data_dir()
            .and_then(|d| std::fs::metadata(d.join(crate::store::DB_FILE_NAME)).ok())
            .map(|m| m.len())
    };
    let file0 = db();
    let cpu = || server.pid.and_then(|p| super::cpu_time(Some(p)));
    let per_mib = |a: Option<Duration>, b: Option<Duration>| {
        a.zip(b).map(|(a, b)| (b - a).as_secs_f64() * 1000.0 / mib(total))
    };

    super::progress(&format!(
        "uploading {} files of {} KiB, {} at a time",
        args.files, args.size_kib, args.concurrency
    ));
    let cpu0 = cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let users = Arc::new(users);
    for u in 0..args.concurrency {
        let users = users.clone();
        let (files, concurrency) = (args.files, args.concurrency);
        tasks.spawn(async move {
            let (ch, token) = &users[u as usize];
            let mut c = client::attachments_client(ch.clone(), Some(token));
            let mut done = Vec::new();
            for n in (u..files).step_by(concurrency as usize) {
                let bytes = content(n, size as usize);
                let (id, last) = upload_timed(&mut c, &format!("file-{n}.bin"), &bytes).await?;
                done.push((id, last));
            }
            Ok::<_, tonic::Status>((u as usize, done))
        });
    }
    let mut uploaded: Vec<(usize, Vec<(String, Duration)>)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| BenchError::Server(format!("upload task: {e}")))?;
        uploaded.push(r.map_err(|e| BenchError::Server(format!("upload: {e}")))?);
    }
    let up_secs = started.elapsed().as_secs_f64();
    let cpu1 = cpu();
    let file1 = db();
    let mut last: Vec<Duration> = uploaded.iter().flat_map(|(_, l)| l).map(|(_, d)| *d).collect();
    last.sort();

    // Each user downloads what they uploaded (only they may see a file no message carries).
    super::progress("downloading them back");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (u, files) in uploaded {
        let users = users.clone();
        tasks.spawn(async move {
            let (ch, token) = &users[u];
            let mut c = client::attachments_client(ch.clone(), Some(token));
            let mut bytes = 0u64;
            for (id, _) in files {
                bytes += client::download(&mut c, &id).await?.len() as u64;
            }
            Ok::<_, tonic::Status>(bytes)
        });
    }
    let mut down = 0u64;
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| BenchError::Server(format!("download task: {e}")))?;
        down += r.map_err(|e| BenchError::Server(format!("download: {e}")))?;
    }
    let down_secs = started.elapsed().as_secs_f64();
    let cpu2 = cpu();
    if down != total {
        return Err(BenchError::Server(format!("downloaded {down} bytes of {total}")));
    }
    let mem = server.pid.and_then(rss);
    Ok(FilesReport {
        scenario: "attachments",
        transport: args.target.transport,
        server_settings: server.settings.clone(),
        file_bytes: size,
        files: args.files,
        concurrency: args.concurrency,
        upload_mib_per_sec: mib(total) / up_secs,
        last_chunk_p50_ms: quantile(&last, 0.5).as_secs_f64() * 1000.0,
        last_chunk_max_ms: last.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        upload_cpu_ms_per_mib: per_mib(cpu0, cpu1),
        download_mib_per_sec: mib(total) / down_secs,
        download_cpu_ms_per_mib: per_mib(cpu1, cpu2),
        file_growth_per_mib: file0.zip(file1).map(|(a, b)| (b - a) as f64 / total as f64),
        server_rss_mib: mem.map(|m| mib(m.0)),
        server_peak_rss_mib: mem.map(|m| mib(m.1)),
    })
}

impl FilesReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.1} {unit}"),
            None => "n/a".into(),
        };
        format!(
            "attachments: {} files of {:.1} MiB, {} at a time, {:?}\n\
             upload              {:.1} MiB/s, server CPU {} per MiB\n\
             last chunk          p50 {:.1} ms, max {:.1} ms (hash + store the whole file)\n\
             download            {:.1} MiB/s, server CPU {} per MiB\n\
             database file       {} per byte stored\n\
             server RSS          {} (peak {})\n",
            self.files,
            mib(self.file_bytes),
            self.concurrency,
            self.transport,
            self.upload_mib_per_sec,
            opt(self.upload_cpu_ms_per_mib, "ms"),
            self.last_chunk_p50_ms,
            self.last_chunk_max_ms,
            self.download_mib_per_sec,
            opt(self.download_cpu_ms_per_mib, "ms"),
            self.file_growth_per_mib.map_or("n/a".into(), |g| format!("{g:.2} bytes")),
            opt(self.server_rss_mib, "MiB"),
            opt(self.server_peak_rss_mib, "MiB"),
        )
    }
}
