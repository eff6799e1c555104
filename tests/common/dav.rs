//! A real WebDAV server (WsgiDAV, as in `.ci/servers.sh`) on a free loopback port, started
//! and killed by a test.

use std::path::Path;
use std::time::Duration;

pub struct Dav {
    pub child: std::process::Child,
    pub port: u16,
}

/// The `wsgidav` program, where pip put it, if installed.
pub fn wsgidav() -> Option<String> {
    let scripts = std::process::Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .ok()?;
    let scripts = String::from_utf8_lossy(&scripts.stdout).trim().to_string();
    [format!("{scripts}/wsgidav"), "wsgidav".to_string()]
        .into_iter()
        .find(|p| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
}

impl Dav {
    /// Serve `root` on a free port; waits until it answers.
    pub fn start(root: &Path) -> Dav {
        let program = wsgidav().expect("wsgidav is installed");
        let port = free_port();
        std::fs::create_dir_all(root).unwrap();
        let child = std::process::Command::new(program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--root"])
            .arg(root)
            .args(["--auth", "anonymous", "-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "wsgidav did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Dav { child, port }
    }
}

impl Drop for Dav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}
