//! `edgechat bench login`: a burst of registrations and then logins (each one argon2id hash
//! on the server) with a fixed number in flight; hashes per second, the server's RSS before,
//! at its peak and after, and how many calls were refused as busy (and retried).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Server, Target, mib, quantile, rss};
use crate::client;
use crate::proto;

/// `bench login` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// Users to register, then log in (each call is one password hash).
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub users: u32,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Skip the logins (registrations only).
    #[arg(long)]
    pub register_only: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct LoginReport {
    /// Always `login`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Users.
    pub users: u32,
    /// Calls in flight.
    pub concurrency: u32,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// Hashing calls that succeeded.
    pub hashes: u64,
    /// Calls answered RESOURCE_EXHAUSTED (then retried after the hint).
    pub busy_refusals: u64,
    /// Calls that failed otherwise.
    pub errors: u64,
    /// Successful hashing calls per second.
    pub hashes_per_sec: f64,
    /// Call latency, ms.
    pub p50_ms: f64,
    /// Call latency, ms.
    pub p99_ms: f64,
    /// Server RSS before the burst (MiB), if the server's pid is known.
    pub rss_idle_mib: Option<f64>,
    /// Server peak RSS during the burst (MiB).
    pub rss_peak_mib: Option<f64>,
    /// Server RSS after the burst (MiB).
    pub rss_after_mib: Option<f64>,
    /// Server CPU time used by the burst, s.
    pub server_cpu_secs: Option<f64>,
    /// The load generator's own CPU time, s.
    pub bench_cpu_secs: Option<f64>,
}

/// Runs the scenario.
pub async fn run(args: &LoginArgs) -> Result<LoginReport, BenchError> {
    let server = Server::start(&args.target, &[])?;
    let pid = server.pid;
    let connect = || async {
        client::connect(&server.url, &server.tls)
            .await
            .map_err(|e| BenchError::Server(e.to_string()))
    };
    // One connection per worker; wait until the server answers before measuring.
    let mut channels = Vec::new();
    for _ in 0..args.concurrency.min(64) {
        channels.push(connect().await?);
    }
    let idle = pid.and_then(rss).map(|(now, _)| now);
    let peak = Arc::new(AtomicU64::new(idle.unwrap_or(0)));
    let sampling = pid.map(|pid| {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some((now, _)) = rss(pid) {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    });
    let (cpu0, own0) = (pid.and_then(|p| super::cpu_time(Some(p))), super::cpu_time(None));
    let started = Instant::now();
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let counters = Arc::new(Counters::default());
    let mut latencies = Vec::new();
    let phases: &[bool] = if args.register_only { &[true] } else { &[true, false] };
    for &register in phases {
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..args.concurrency {
            let ch = channels[w as usize % channels.len()].clone();
            let (next, counters, run_id, users) =
                (next.clone(), counters.clone(), run_id.clone(), args.users as u64);
            tasks.spawn(async move {
                let mut auth = client::auth_client(ch, None);
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users {
                        return lat;
                    }
                    let username = format!("b{run_id}u{i}");
                    loop {
                        let t = Instant::now();
                        let r = if register {
                            auth.register(proto::RegisterRequest {
                                username: username.clone(),
                                password: "bench password".into(),
                                display_name: String::new(),
                                ..Default::default()
                            })
                            .await
                        } else {
                            auth.login(proto::LoginRequest {
                                username: username.clone(),
                                password: "bench password".into(),
                            })
                            .await
                        };
                        match r {
                            Ok(_) => {
                                lat.push(t.elapsed());
                                counters.hashes.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                                counters.busy.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(_) => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            latencies.extend(r.map_err(|e| BenchError::Server(e.to_string()))?);
        }
    }
    let elapsed = started.elapsed();
    let (cpu1, own1) = (pid.and_then(|p| super::cpu_time(Some(p))), super::cpu_time(None));
    // Let the server settle (threads finish, buffers drop) before reading "after".
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(s) = sampling {
        s.abort();
    }
    let after = pid.and_then(rss).map(|(now, _)| now);
    latencies.sort();
    let hashes = counters.hashes.load(Ordering::Relaxed);
    let secs = |a: Option<Duration>, b: Option<Duration>| Some((b? - a?).as_secs_f64());
    Ok(LoginReport {
        scenario: "login",
        transport: args.target.transport,
        users: args.users,
        concurrency: args.concurrency,
        server_settings: server.settings.clone(),
        hashes,
        busy_refusals: counters.busy.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        hashes_per_sec: hashes as f64 / elapsed.as_secs_f64(),
        p50_ms: quantile(&latencies, 0.5).as_secs_f64() * 1e3,
        p99_ms: quantile(&latencies, 0.99).as_secs_f64() * 1e3,
        rss_idle_mib: idle.map(mib),
        rss_peak_mib: pid.map(|_| mib(peak.load(Ordering::Relaxed))),
        rss_after_mib: after.map(mib),
        server_cpu_secs: secs(cpu0, cpu1),
        bench_cpu_secs: secs(own0, own1),
    })
}

#[derive(Default)]
struct Counters {
    hashes: AtomicU64,
    busy: AtomicU64,
    errors: AtomicU64,
}

impl LoginReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.1} {unit}"),
            None => "n/a (no --server-pid)".into(),
        };
        format!(
            "login: {} users, {} in flight, {:?}\n\
             hashes            {} ({:.1}/s)\n\
             busy refusals     {} (retried)\n\
             errors            {}\n\
             latency p50/p99   {:.1} / {:.1} ms\n\
             server RSS idle   {}\n\
             server RSS peak   {}\n\
             server RSS after  {}\n\
             server CPU        {}\n\
             bench CPU         {}\n",
            self.users,
            self.concurrency,
            self.transport,
            self.hashes,
            self.hashes_per_sec,
            self.busy_refusals,
            self.errors,
            self.p50_ms,
            self.p99_ms,
            opt(self.rss_idle_mib, "MiB"),
            opt(self.rss_peak_mib, "MiB"),
            opt(self.rss_after_mib, "MiB"),
            opt(self.server_cpu_secs, "s"),
            opt(self.bench_cpu_secs, "s"),
        )
    }
}
