//! The single-pass limit for one large file on this machine: read it, cut it with FastCDC,
//! and BLAKE3 and zstd-3 every chunk on all cores, storing nothing. `benches/compare.sh`
//! prints cuckoo's backup throughput of the same file next to it.
//!
//! `CUCKOO_SINGLE_PASS_FILE=/path cargo bench --bench single_pass` (without the variable it
//! does nothing, so `cargo test --benches` stays quick).

use std::io::Read;
use std::time::Instant;

use cuckoo::internals::chunker::{ChunkerParams, StreamChunker};
use cuckoo::internals::codec::{self, ObjectKind};
use cuckoo::internals::crypto::Keys;
use rayon::iter::{ParallelBridge, ParallelIterator};

fn main() {
    let Ok(path) = std::env::var("CUCKOO_SINGLE_PASS_FILE") else {
        println!("single_pass: set CUCKOO_SINGLE_PASS_FILE to a large file to measure");
        return;
    };
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::open(&path).expect("readable file");
        let mut chunker = StreamChunker::new(ChunkerParams::default(), 0);
        let mut buf = vec![0u8; 8 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
            chunker.push(&buf[..n], &mut |_, c| tx.send(c.to_vec()).expect("consumer alive"));
        }
        chunker.finish(&mut |_, c| tx.send(c.to_vec()).expect("consumer alive"));
        total
    });
    let keys = Keys::plain();
    rx.into_iter().par_bridge().for_each(|chunk| {
        let id = keys.id_of(&chunk);
        std::hint::black_box(codec::encode(ObjectKind::Chunk, &id, &chunk, 3, &keys));
    });
    let total = reader.join().expect("reader");
    let secs = start.elapsed().as_secs_f64();
    println!("single_pass\t{total}\t{secs:.2}\t{:.0}", total as f64 / secs / (1 << 20) as f64);
}
