//! A throwaway PostgreSQL cluster for tests: started once per test process in a temporary
//! folder, reached on a Unix socket in that folder (and on a free loopback port for TLS; the port
//! is picked by binding and releasing it, so two test binaries could in rare cases race for
//! one), one fresh database per caller, and stopped and deleted by a watchdog when the test
//! process exits (however it exits).
//!
//! The server binaries come from `AKASHI_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package). `initdb` refuses to run as root, so as root the cluster runs
//! as the `postgres` user. Without the binaries, [`cluster`] returns `None` and the caller skips,
//! saying so on stderr, unless `AKASHI_REQUIRE_POSTGRES=1` is set (CI sets it): then it panics.
//! The cluster runs with `fsync=off`: tests kill akashi, never the database, and it is
//! several times faster. It also listens on a free loopback TCP port with TLS, under a
//! certificate from a test CA made with `openssl` at start ([`TestCluster::tls_url`]).

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test utility: a cluster that cannot start must stop the test with its reason"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

/// A running test cluster.
#[derive(Debug)]
pub struct TestCluster {
    bin: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    tls_dir: PathBuf,
    as_postgres: bool,
    next_db: AtomicU32,
}

/// The process's test cluster, started on first use; `None` when PostgreSQL is not installed
/// and not required.
pub fn cluster() -> Option<&'static TestCluster> {
    static CLUSTER: OnceLock<Option<TestCluster>> = OnceLock::new();
    CLUSTER.get_or_init(start).as_ref()
}

/// A fresh, empty database's URL (`postgres:///NAME?host=SOCKET&user=postgres`), or `None`
/// (with a line on stderr naming `test`) when PostgreSQL is not installed and not required.
pub fn fresh_database(test: &str) -> Option<String> {
    match cluster() {
        Some(cluster) => Some(cluster.create_database()),
        None => {
            eprintln!(
                "{test}: skipped, PostgreSQL server binaries not found (install Debian's \
                 postgresql or set AKASHI_PG_BIN; AKASHI_REQUIRE_POSTGRES=1 makes this a failure)"
            );
            None
        }
    }
}

impl TestCluster {
    /// Creates a new empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("akashi_test_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres:///{name}?host={}&port={}&user=postgres",
            self.socket_dir.display(),
            self.port
        )
    }

    /// The URL of database `name` over TCP with TLS, verified against the test CA.
    pub fn tls_url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{name}?sslrootcert={}",
            self.port,
            self.tls_dir.join("ca.pem").display()
        )
    }

    /// A CA that did not sign the cluster's certificate (PEM file).
    pub fn other_ca(&self) -> PathBuf {
        self.tls_dir.join("other-ca.pem")
    }

    /// Runs one SQL command in database `db` with `psql`, returning its unaligned output.
    ///
    /// # Panics
    ///
    /// When `psql` fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let socket = self.socket_dir.display().to_string();
        let output = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&socket)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// `psql` connected to database `db`, for a test to drive a session of its own (reading
    /// commands from its stdin).
    pub fn psql_session(&self, db: &str) -> Command {
        let mut command = self.command("psql");
        command
            .args(["-X", "-q", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db]);
        command
    }

    fn command(&self, program: &str) -> Command {
        as_user(self.as_postgres, &self.bin.join(program))
    }
}

fn start() -> Option<TestCluster> {
    let required = std::env::var("AKASHI_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let Some(bin) = find_bin() else {
        assert!(
            !required,
            "AKASHI_REQUIRE_POSTGRES=1 but no PostgreSQL server binaries were found (install \
             Debian's postgresql or set AKASHI_PG_BIN)"
        );
        return None;
    };
    let as_postgres = is_root();
    let base = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let root = base.join(format!(
        "akashi-pg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let data = root.join("data");
    let socket_dir = root.join("socket");
    let tls_dir = root.join("tls");
    for dir in [&root, &data, &socket_dir, &tls_dir] {
        std::fs::create_dir_all(dir).expect("create the test cluster's folders");
    }
    // Armed first: a failed initdb or start still leaves nothing behind.
    watch_over(&root, &data, &bin, as_postgres);
    make_certificates(&tls_dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port();
    if as_postgres {
        // The postgres user must reach the data and socket folders.
        run(Command::new("chmod").arg("755").arg(&root), "chmod");
        run(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .arg(&socket_dir),
            "chown",
        );
    }
    run(
        as_user(as_postgres, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        "initdb",
    );
    for file in ["server.pem", "server.key"] {
        std::fs::copy(tls_dir.join(file), data.join(file)).expect("copy the server's certificate");
    }
    run(
        Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")),
        "chmod",
    );
    if as_postgres {
        run(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("server.pem"))
                .arg(data.join("server.key")),
            "chown",
        );
    }
    let options = format!(
        "-k {} -p {port} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=server.pem \
         -c ssl_key_file=server.key -c fsync=off -c max_connections=200",
        socket_dir.display()
    );
    run(
        as_user(as_postgres, &bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-o", &options, "start"]),
        "pg_ctl start",
    );
    Some(TestCluster {
        bin,
        socket_dir,
        port,
        tls_dir,
        as_postgres,
        next_db: AtomicU32::new(0),
    })
}

/// Stops the cluster and deletes its folder once this process is gone: a detached shell polls
/// for the process, so a test binary killed or panicking still leaves nothing running.
fn watch_over(root: &Path, data: &Path, bin: &Path, as_postgres: bool) {
    let pg_ctl = bin.join("pg_ctl");
    let stop = if as_postgres {
        format!(
            "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "'{}' -D '{}' -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    // The inner shell is put in the background, so the one we wait for returns at once and the
    // watchdog lives on, adopted by init.
    let script = format!(
        "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf '{root}') &",
        pid = std::process::id(),
        root = root.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start the test cluster's watchdog");
}

/// A test CA, a server certificate it signed for `localhost` and 127.0.0.1, and another CA.
fn make_certificates(dir: &Path) {
    let script = r#"set -e
key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $key -keyout ca.key -out ca.pem -days 3650 -subj "/CN=akashi test CA"
openssl req -x509 $key -keyout other-ca.key -out other-ca.pem -days 3650 -subj "/CN=other CA"
openssl req $key -keyout server.key -out server.csr -subj "/CN=localhost"
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1
' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem   -days 3650 -extfile server.ext
"#;
    run(
        Command::new("sh").args(["-c", script]).current_dir(dir),
        "openssl (the test cluster's certificates)",
    );
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AKASHI_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn as_user(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
