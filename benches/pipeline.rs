//! Throughput of each pure pipeline stage and of placement, so regressions show:
//! `cargo bench --bench pipeline`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cuckoo::ObjectId;
use cuckoo::internals::chunker::{ChunkerParams, StreamChunker};
use cuckoo::internals::codec::{self, ObjectKind};
use cuckoo::internals::crypto::{Keys, MasterKey};
use cuckoo::internals::ring::Ring;
use std::hint::black_box;

fn data(len: usize) -> Vec<u8> {
    let words = ["alpha ", "beta ", "gamma ", "delta\n", "storage ", "chunk "];
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % 6) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

fn stages(c: &mut Criterion) {
    let input = data(64 << 20);
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc", |b| {
        b.iter(|| {
            let mut chunker = StreamChunker::new(ChunkerParams::default(), 0);
            let mut n = 0;
            chunker.push(&input, &mut |_, c| n += c.len());
            chunker.finish(&mut |_, c| n += c.len());
            black_box(n)
        })
    });
    g.bench_function("blake3", |b| b.iter(|| black_box(ObjectId::of(&input))));
    let sealed = Keys::from_master(&MasterKey::from_bytes([7; 32]));
    g.bench_function("blake3_keyed", |b| b.iter(|| black_box(sealed.id_of(&input))));
    let chunk = &input[..1 << 20];
    let id = ObjectId([0; 32]);
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    for (name, keys) in [("plain", Keys::plain()), ("sealed", sealed)] {
        for level in [1, 3] {
            g.bench_with_input(BenchmarkId::new(format!("zstd_{name}"), level), &level, |b, &l| {
                b.iter(|| black_box(codec::encode(ObjectKind::Chunk, &id, chunk, l, &keys)))
            });
        }
        // Level 0 stores the body raw: what remains is the envelope (and the AEAD).
        g.bench_function(format!("envelope_only_{name}"), |b| {
            b.iter(|| black_box(codec::encode(ObjectKind::Chunk, &id, chunk, 0, &keys)))
        });
        let encoded = codec::encode(ObjectKind::Chunk, &id, chunk, 3, &keys);
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| black_box(codec::decode(ObjectKind::Chunk, &id, &encoded, &keys).unwrap()))
        });
    }
    g.finish();
}

/// Erasure coding one 1 MiB object: split into shards, and rebuild it with the two first
/// data shards lost (the worst case: parity decoding).
fn redundancy(c: &mut Criterion) {
    use cuckoo::internals::redundancy::{join, open_shard, split};
    let object = data(1 << 20);
    let id = ObjectId([1; 32]);
    let mut g = c.benchmark_group("redundancy");
    g.throughput(Throughput::Bytes(object.len() as u64));
    for (k, m) in [(3u8, 2u8), (4, 2), (10, 4)] {
        let name = format!("{k}+{m}");
        g.bench_function(BenchmarkId::new("split", &name), |b| {
            b.iter(|| black_box(split(&id, &object, k, m).unwrap()))
        });
        let shards = split(&id, &object, k, m).unwrap();
        g.bench_function(BenchmarkId::new("join_degraded", &name), |b| {
            b.iter(|| {
                let opened: Vec<_> = shards[2..].iter().map(|s| open_shard(&id, s).unwrap()).collect();
                black_box(join(&id, &opened).unwrap())
            })
        });
    }
    g.finish();
}

fn placement(c: &mut Criterion) {
    let ids: Vec<ObjectId> = (0..1024u32).map(|i| ObjectId::of(&i.to_le_bytes())).collect();
    let mut g = c.benchmark_group("ring_lookup");
    g.throughput(Throughput::Elements(ids.len() as u64));
    for n in [3usize, 10, 50] {
        let names: Vec<String> = (0..n).map(|i| format!("backend-{i}")).collect();
        let weights = (0..n).map(|i| 1.0 + (i * 7 % 10) as f64);
        let ring = Ring::new(names.iter().map(String::as_str).zip(weights)).unwrap();
        // One copy, copies=2, erasure 4+2: the weight set is computed once, outside the loop.
        for pieces in [1usize, 2, 6].into_iter().filter(|p| *p < n) {
            ring.set(pieces);
            g.bench_with_input(BenchmarkId::new(format!("{pieces}_pieces"), n), &ring, |b, ring| {
                b.iter(|| ids.iter().map(|id| ring.order(id, pieces)[0]).sum::<usize>())
            });
        }
    }
    g.finish();
}

fn catalogue(c: &mut Criterion) {
    use cuckoo::internals::catalogue::{Catalogue, Location, PieceAt, Record};
    let dir = tempfile::tempdir().unwrap();
    let (cat, _) = Catalogue::open(&dir.path().join("c.redb"), cuckoo::internals::crypto::Keys::plain()).unwrap();
    let mut n = 0u64;
    let mut g = c.benchmark_group("catalogue");
    g.throughput(Throughput::Elements(512));
    g.bench_function("record_512_chunks", |b| {
        b.iter(|| {
            let batch: Vec<Record> = (0..512)
                .map(|_| {
                    n += 1;
                    let piece = PieceAt { backend: "b".into(), shard: false, stored_len: 1000 };
                    let location = Location { plain_len: 4000, pieces: vec![piece] };
                    Record::Chunk { id: ObjectId::of(&n.to_le_bytes()), location }
                })
                .collect();
            cat.record(&batch).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, stages, redundancy, placement, catalogue);
criterion_main!(benches);
