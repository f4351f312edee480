//! Measures tantivy indexing and querying the edgechat search corpus, for comparison with
//! the index edgechat keeps in redb.
//!
//! ```text
//! tantivy-compare index CORPUS DIR [--budget-mb N] [--threads N] [--commit-every N] [--limit N]
//! tantivy-compare query DIR QUERIES [--rooms N] [--runs N] [--warmup N]
//!                       [--room-filter set|union|none]
//! ```
//!
//! CORPUS is the output of `benches/search/corpus.py` (`room<TAB>at_ms<TAB>text` a line),
//! QUERIES that of `corpus.py --queries` (words a line, all of them required).
//!
//! `index` creates a fresh index in DIR (which must not exist). Without `--commit-every` it
//! commits once at the end (bulk, the best case); with it, it commits every N documents, as
//! a server making each message searchable within about a second would, and prints progress
//! every 10,000 documents. Either way it then waits for merges and prints the segments, the
//! files and the bytes on disk.
//!
//! `query` opens DIR with a reader, and for each query runs: every word required, AND room
//! in 0..N (the caller's rooms), top 50 by `at_ms` descending (newest first). It prints the
//! total hits (once, with the `Count` collector) and the latency of the top-50 search.
//! `--room-filter` picks how the rooms are expressed: `set` (the default) is one
//! `TermSetQuery`, `union` a `BooleanQuery` of one `TermQuery` a room (`Occur::Should`),
//! `none` no room filter at all (the baseline: what the words alone cost).

use std::collections::BTreeMap;
use std::error::Error;
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::{
    FAST, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::{DocAddress, Index, IndexWriter, Order, TantivyDocument, Term};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The smallest per-thread memory budget tantivy 0.27 accepts
/// (`indexer::index_writer::MEMORY_BUDGET_NUM_BYTES_MIN`, which it does not export).
const MIN_BUDGET_PER_THREAD: usize = 15_000_000;

/// Hits a query returns, as a chat client's first page of search results would.
const TOP_K: usize = 50;

/// Documents between progress lines in near-real-time mode.
const PROGRESS_EVERY: usize = 10_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (positional, options) = split_args(&args)?;
    match positional.as_slice() {
        ["index", corpus, dir] => index(
            Path::new(corpus),
            Path::new(dir),
            &IndexOptions {
                threads: option(&options, "threads", 1)?,
                budget_mb: option(&options, "budget-mb", 0)?,
                commit_every: option(&options, "commit-every", 0)?,
                limit: option(&options, "limit", usize::MAX)?,
            },
        ),
        ["query", dir, queries] => query(
            Path::new(dir),
            Path::new(queries),
            option(&options, "rooms", 64)?,
            option(&options, "runs", 1000)?,
            option(&options, "warmup", 100)?,
            options.get("room-filter").copied().unwrap_or("set"),
        ),
        _ => Err("usage: tantivy-compare index CORPUS DIR [--budget-mb N] [--threads N] \
                  [--commit-every N] [--limit N] | query DIR QUERIES [--rooms N] [--runs N] \
                  [--warmup N] [--room-filter set|union|none]"
            .into()),
    }
}

/// The schema of one chat message: its words (searchable, not stored), its room (searchable,
/// for the room filter, and fast), its number within the room (what a hit resolves to) and
/// its time (fast, to order hits newest first).
fn schema() -> Schema {
    let mut builder = Schema::builder();
    // The default tokenizer: split on non-alphanumerics, drop tokens over 40 bytes, lowercase.
    // Basic records doc ids only: no term frequencies, no positions (no phrase queries).
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::Basic),
    );
    builder.add_text_field("text", text);
    builder.add_u64_field("room", INDEXED | FAST);
    builder.add_u64_field("seq", FAST | STORED);
    builder.add_u64_field("at_ms", FAST);
    builder.build()
}

struct IndexOptions {
    threads: usize,
    /// Total budget across threads, in MB (10^6 bytes, as tantivy counts); 0 for the minimum.
    budget_mb: usize,
    /// 0 for one commit at the end.
    commit_every: usize,
    limit: usize,
}

fn index(corpus: &Path, dir: &Path, opts: &IndexOptions) -> Result<()> {
    fs::create_dir(dir)?;
    let schema = schema();
    let field = |name| schema.get_field(name).expect("field in schema");
    let (text, room, seq, at_ms) = (field("text"), field("room"), field("seq"), field("at_ms"));
    let index = Index::create_in_dir(dir, schema.clone())?;
    let budget = if opts.budget_mb == 0 {
        MIN_BUDGET_PER_THREAD * opts.threads
    } else {
        opts.budget_mb * 1_000_000
    };
    let mut writer: IndexWriter = index.writer_with_num_threads(opts.threads, budget)?;
    println!(
        "tantivy {} | threads {} | budget {} bytes ({} per thread) | {}",
        tantivy::version_string(),
        opts.threads,
        budget,
        budget / opts.threads,
        if opts.commit_every == 0 {
            "bulk: one commit at the end".to_string()
        } else {
            format!("near-real-time: commit every {} docs", opts.commit_every)
        }
    );
    print_threads("threads after opening the writer");

    let start = Instant::now();
    let mut seq_in_room = [0u64; 64];
    let mut commit_times: Vec<Duration> = Vec::new();
    let mut docs = 0usize;
    let mut last_progress = (Instant::now(), 0usize);
    for line in BufReader::with_capacity(1 << 20, File::open(corpus)?).lines() {
        if docs == opts.limit {
            break;
        }
        let line = line?;
        let mut cols = line.splitn(3, '\t');
        let (Some(r), Some(at), Some(words)) = (cols.next(), cols.next(), cols.next()) else {
            return Err(format!("bad corpus line {}: {line:?}", docs + 1).into());
        };
        let r: u64 = r.parse()?;
        let counter = seq_in_room.get_mut(r as usize).ok_or("room out of 0..64")?;
        *counter += 1;
        let mut doc = TantivyDocument::new();
        doc.add_text(text, words);
        doc.add_u64(room, r);
        doc.add_u64(seq, *counter);
        doc.add_u64(at_ms, at.parse()?);
        writer.add_document(doc)?;
        docs += 1;

        if opts.commit_every > 0 && docs % opts.commit_every == 0 {
            let t = Instant::now();
            writer.commit()?;
            commit_times.push(t.elapsed());
            if docs % PROGRESS_EVERY == 0 {
                let (since, at_docs) = last_progress;
                let (files, bytes, _) = dir_usage(dir)?;
                println!(
                    "  {docs:>7} docs {:>8.1} s | last {PROGRESS_EVERY}: {:>7.0} docs/s | \
                     segments {:>3} | files {files:>4} | {bytes:>10} bytes",
                    start.elapsed().as_secs_f64(),
                    (docs - at_docs) as f64 / since.elapsed().as_secs_f64(),
                    index.searchable_segment_ids()?.len(),
                );
                last_progress = (Instant::now(), docs);
            }
        }
    }
    let added = start.elapsed();
    if opts.commit_every > 0 {
        print_threads("threads while indexing");
    }
    let t = Instant::now();
    writer.commit()?;
    let last_commit = t.elapsed();
    let committed = start.elapsed();
    println!(
        "{docs} docs: added in {:.2} s, last commit {:.2} s, searchable after {:.2} s = {:.0} docs/s",
        added.as_secs_f64(),
        last_commit.as_secs_f64(),
        committed.as_secs_f64(),
        docs as f64 / committed.as_secs_f64()
    );
    if !commit_times.is_empty() {
        commit_times.sort();
        println!(
            "commits: {} | p50 {} us, p99 {} us, max {} us",
            commit_times.len(),
            percentile(&commit_times, 0.50).as_micros(),
            percentile(&commit_times, 0.99).as_micros(),
            commit_times.last().unwrap().as_micros(),
        );
    }
    print_disk("at last commit, before waiting for merges", &index, dir)?;
    print_rss("index process before waiting for merges");

    let t = Instant::now();
    writer.wait_merging_threads()?;
    println!(
        "waited {:.2} s for merges; total {:.2} s = {:.0} docs/s",
        t.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64(),
        docs as f64 / start.elapsed().as_secs_f64()
    );
    // Merged-away segment files are removed by the garbage collection that runs after
    // merges; what is left on disk is what a reader opening the index would map.
    print_disk("after merges", &index, dir)?;
    print_rss("index process at the end");
    Ok(())
}

fn query(
    dir: &Path,
    queries: &Path,
    rooms: u64,
    runs: usize,
    warmup: usize,
    room_filter: &str,
) -> Result<()> {
    print_rss("query process before opening");
    let index = Index::open_in_dir(dir)?;
    let schema = index.schema();
    let text = schema.get_field("text")?;
    let room = schema.get_field("room")?;
    // The default reload policy: a server's reader must see new commits, so it watches
    // meta.json for changes (a background thread).
    let reader = index.reader()?;
    let searcher = reader.searcher();
    println!(
        "tantivy {} | {} docs in {} segments | rooms 0..{rooms} by {room_filter} | {runs} runs \
         after {warmup} warm-up runs | top {TOP_K} by at_ms desc",
        tantivy::version_string(),
        searcher.num_docs(),
        searcher.segment_readers().len()
    );
    print_rss("query process after opening the reader");
    print_threads("threads after opening the reader");

    // One query for the room filter, shared by every search, as a server would build it once
    // per caller.
    let room_terms = (0..rooms).map(|r| Term::from_field_u64(room, r));
    let room_filter: Option<Box<dyn Query>> = match room_filter {
        "set" => Some(Box::new(TermSetQuery::new(room_terms))),
        "union" => Some(Box::new(BooleanQuery::new(
            room_terms
                .map(|t| {
                    let q: Box<dyn Query> = Box::new(TermQuery::new(t, IndexRecordOption::Basic));
                    (Occur::Should, q)
                })
                .collect(),
        ))),
        "none" => None,
        other => return Err(format!("--room-filter {other}: not set, union or none").into()),
    };
    let top = TopDocs::with_limit(TOP_K).order_by_fast_field::<u64>("at_ms", Order::Desc);

    println!("{:<28} {:>8} {:>8} {:>8} {:>8}", "query", "hits", "p50 us", "p99 us", "max us");
    for line in fs::read_to_string(queries)?.lines().filter(|l| !l.trim().is_empty()) {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = line
            .split_whitespace()
            .map(|word| {
                let term = Term::from_field_text(text, word);
                let q: Box<dyn Query> = Box::new(TermQuery::new(term, IndexRecordOption::Basic));
                (Occur::Must, q)
            })
            .collect();
        if let Some(filter) = &room_filter {
            clauses.push((Occur::Must, filter.box_clone()));
        }
        let q = BooleanQuery::new(clauses);

        let hits = searcher.search(&q, &Count)?;
        let check: Vec<(Option<u64>, DocAddress)> = searcher.search(&q, &top)?;
        assert_eq!(check.len(), hits.min(TOP_K), "top-k shorter than the hit count");
        assert!(check.windows(2).all(|w| w[0].0 >= w[1].0), "not newest first");
        for _ in 0..warmup {
            searcher.search(&q, &top)?;
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let found = searcher.search(&q, &top)?;
            times.push(t.elapsed());
            std::hint::black_box(found);
        }
        times.sort();
        println!(
            "{:<28} {:>8} {:>8} {:>8} {:>8}",
            line,
            hits,
            percentile(&times, 0.50).as_micros(),
            percentile(&times, 0.99).as_micros(),
            times.last().map_or(0, Duration::as_micros),
        );
    }
    print_rss("query process after the queries");
    print_threads("threads after the queries");
    Ok(())
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Segments, files and bytes (apparent size, as `du -sb` counts, less the directory itself),
/// with the bytes by file extension (tantivy writes one file per segment component).
fn print_disk(when: &str, index: &Index, dir: &Path) -> Result<()> {
    let (files, bytes, by_ext) = dir_usage(dir)?;
    let segments = index.searchable_segment_metas()?;
    let docs: u32 = segments.iter().map(|s| s.num_docs()).sum();
    println!(
        "{when}: {} segments, {docs} docs, {files} files, {bytes} bytes ({:.1} MiB)",
        segments.len(),
        bytes as f64 / (1 << 20) as f64
    );
    let ext: Vec<String> = by_ext.iter().map(|(e, (n, b))| format!("{e} {n}x {b}")).collect();
    println!("  by extension: {}", ext.join(" | "));
    Ok(())
}

/// (files, bytes, extension -> (files, bytes)) of the files directly in `dir`.
fn dir_usage(dir: &Path) -> Result<(usize, u64, BTreeMap<String, (usize, u64)>)> {
    let (mut files, mut bytes) = (0, 0);
    let mut by_ext: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let len = entry.metadata()?.len();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ext = match name.rsplit_once('.') {
            Some((_, ext)) => ext.to_string(),
            None => name,
        };
        let slot = by_ext.entry(ext).or_default();
        slot.0 += 1;
        slot.1 += len;
        files += 1;
        bytes += len;
    }
    Ok((files, bytes, by_ext))
}

/// Current and peak resident set size from /proc/self/status. RSS includes the pages of
/// the memory-mapped index files that have been touched.
fn print_rss(when: &str) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    println!(
        "RSS {when}: VmRSS {} (anon {}, file {}), VmHWM {}",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:")
    );
}

/// The threads of this process, by name, with a count of each.
fn print_threads(when: &str) {
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    if let Ok(tasks) = fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            *names.entry(comm.trim().to_string()).or_default() += 1;
        }
    }
    let total: usize = names.values().sum();
    let list: Vec<String> = names.iter().map(|(n, c)| format!("{n} x{c}")).collect();
    println!("{when}: {total} ({})", list.join(", "));
}

/// Splits `--name value` options from positional arguments.
fn split_args(args: &[String]) -> Result<(Vec<&str>, BTreeMap<&str, &str>)> {
    let (mut positional, mut options) = (Vec::new(), BTreeMap::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.strip_prefix("--") {
            Some(name) => {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                options.insert(name, value.as_str());
            }
            None => positional.push(arg.as_str()),
        }
    }
    Ok((positional, options))
}

fn option<T: std::str::FromStr>(options: &BTreeMap<&str, &str>, name: &str, default: T) -> Result<T>
where
    T::Err: Error + 'static,
{
    match options.get(name) {
        Some(v) => Ok(v.parse()?),
        None => Ok(default),
    }
}
