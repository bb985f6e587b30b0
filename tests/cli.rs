//! Black-box tests of the `fluxora` binary: configuration validation, `migrate`, `demo`, and the
//! operator commands `verify`, `rebuild` and `stream`.

use std::path::Path;
use std::process::{Command, Output};

use fluxora::testing::TempPgDatabase;

const SETTINGS: [&str; 13] = [
    "DATABASE_URL",
    "SOURCE",
    "HORIZON_URL",
    "STELLAR_RPC_URL",
    "CONTRACT_ID",
    "NETWORK_PASSPHRASE",
    "START_LEDGER",
    "FINALITY_DEPTH",
    "TOKEN_DECIMALS",
    "LISTEN_ADDR",
    "ADMIN_API_KEY",
    "LOG_FORMAT",
    "LOG_LEVEL",
];

/// The binary, run in `dir` with none of our settings inherited from the test's environment.
fn fluxora(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fluxora"));
    c.current_dir(dir);
    for k in SETTINGS {
        c.env_remove(k);
    }
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_invalid_setting_is_reported_at_once_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = fluxora(dir.path())
        .env("TOKEN_DECIMALS", "seven")
        .env("ADMIN_API_KEY", "tiny-secret")
        .args([
            "--database-url",
            "mongodb://db",
            "--source",
            "horizon",
            "--horizon-url",
            "horizon.example",
            "--contract-id",
            "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSD",
            "--finality-depth",
            "999999999",
            "--listen-addr",
            "8787",
            "--log-format",
            "yaml",
            "config",
            "--chain",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stdout.is_empty());
    for name in [
        "DATABASE_URL",
        "HORIZON_URL",
        "CONTRACT_ID",
        "NETWORK_PASSPHRASE",
        "FINALITY_DEPTH",
        "TOKEN_DECIMALS",
        "LISTEN_ADDR",
        "ADMIN_API_KEY",
        "LOG_FORMAT",
    ] {
        assert!(stderr.contains(name), "{name} not reported in:\n{stderr}");
    }
    assert!(
        stderr.contains("mongodb"),
        "the reason names the bad scheme"
    );
    assert!(!stderr.contains("tiny-secret"), "secrets are never printed");
}

#[test]
fn config_prints_effective_settings_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = fluxora(dir.path())
        .env("ADMIN_API_KEY", "a-very-long-admin-key")
        .env("DATABASE_URL", "postgres://app:hunter2@127.0.0.1:5432/prod")
        .env("LISTEN_ADDR", "0.0.0.0:9000")
        .args(["--listen-addr", "127.0.0.1:9999", "config"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["listen_addr"], "127.0.0.1:9999",
        "a flag wins over the environment"
    );
    assert_eq!(v["token_decimals"], 7);
    assert_eq!(v["admin_api_key"], "***");
    assert!(!stdout.contains("hunter2") && !stdout.contains("a-very-long-admin-key"));
}

#[test]
fn dotenv_file_is_read_and_a_broken_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "# settings for this test\nDATABASE_URL=sqlite://from-dotenv.db\nLOG_FORMAT=json\n",
    )
    .unwrap();
    let out = fluxora(dir.path()).arg("migrate").output().unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(dir.path().join("from-dotenv.db").exists());
    // JSON logs on stderr when LOG_FORMAT=json.
    let line = stderr
        .lines()
        .find(|l| l.contains("database migrated"))
        .unwrap();
    let log: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(log["backend"], "sqlite");

    std::fs::write(dir.path().join(".env"), "DATABASE_URL='unterminated\n").unwrap();
    let out = fluxora(dir.path()).arg("migrate").output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains(".env"), "{stderr}");
}

#[test]
fn migrate_creates_the_sqlite_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = fluxora(dir.path())
            .args(["--database-url", "sqlite://nested.db", "migrate"])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains("migrated sqlite database"), "{stdout}");
    }
    assert!(dir.path().join("nested.db").exists());
}

#[test]
fn migrate_applies_the_postgres_schema() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(db) = rt.block_on(TempPgDatabase::create()).unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = fluxora(dir.path())
        .env("DATABASE_URL", &db.url)
        .arg("migrate")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("migrated postgres database"), "{stdout}");
    rt.block_on(db.drop_db()).unwrap();
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = fluxora(dir.path())
        .args([
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "migrate",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot open database postgres://nobody@127.0.0.1:1/none"),
        "{stderr}"
    );
}

#[test]
fn demo_indexes_the_simulated_network_through_forks_and_exits_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let out = fluxora(dir.path())
        .args([
            "--listen-addr",
            "127.0.0.1:0",
            "demo",
            "--exit-after-ledgers",
            "120",
            "--cadence-ms",
            "20",
            "--fork-every",
            "15",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("health: http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("/api/admin/webhooks"), "{stdout}");
    assert!(stdout.contains("ws://127.0.0.1:"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("demo finished"))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    // "demo finished: ledger 1119, 700 events, 3 reorgs, epoch 3"
    let words: Vec<&str> = summary.split_whitespace().collect();
    let ledger: u32 = words[3].trim_end_matches(',').parse().unwrap();
    let events: u64 = words[4].parse().unwrap();
    let reorgs: u64 = words[6].parse().unwrap();
    assert_eq!(ledger, 1_000 + 120 - 1);
    assert!(events > 0 && reorgs > 0, "{summary}");
    assert!(
        stderr.contains("reorg: rolled back"),
        "rollbacks are logged with their cause"
    );
    assert!(dir.path().join("fluxora-demo.db").exists());

    // The projection the live path wrote through those reorgs equals a rebuild.
    let db = "sqlite://fluxora-demo.db";
    let verify = || {
        fluxora(dir.path())
            .args(["--database-url", db, "verify"])
            .output()
            .unwrap()
    };
    let out = verify();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true, "{stdout}");
    assert_eq!(report["chain"]["ledgers"], 120);
    assert!(report["projection"]["versions"].as_u64().unwrap() > 0);
    assert_eq!(report["projection"]["comparison"]["differences"], 0);

    // Time travel: a stream created after the first ledger, as of its creating ledger and the
    // one before; a ledger that is not stored is named with the stored range.
    let show = |args: &[&str]| {
        let mut a = vec!["--database-url", db, "stream"];
        a.extend_from_slice(args);
        fluxora(dir.path()).args(a).output().unwrap()
    };
    let (id, created) = (0..200u64)
        .find_map(|id| {
            let out = show(&[&id.to_string()]);
            let v: serde_json::Value = serde_json::from_str(&text(&out).0).ok()?;
            assert!(v["stream"]["depositAmount"].is_string());
            let created = v["stream"]["createdLedger"].as_u64()?;
            (created > 1_000).then_some((id.to_string(), created))
        })
        .expect("a stream created after the first ledger");
    let out = show(&[&id, "--ledger", &created.to_string()]);
    let v: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(v["stream"]["id"], id.as_str());
    assert_eq!(v["stream"]["createdLedger"].as_u64(), Some(created));
    assert!(v["stream"]["updatedLedger"].as_u64() <= Some(created));
    let out = show(&[&id, "--ledger", &(created - 1).to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("did not exist as of ledger"),
        "{}",
        text(&out).1
    );
    let out = show(&[&id, "--ledger", "999"]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("ledger 999 is not stored (the store holds ledgers 1000..=1119)"),
        "{}",
        text(&out).1
    );
    let out = fluxora(dir.path())
        .args(["--database-url", db, "stream", "987654321"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out)
        .1
        .contains("stream 987654321 is not in the store"));

    // A tampered projection row is found, named, and repaired by rebuild.
    tamper(&dir.path().join("fluxora-demo.db"));
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).0);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("withdrawn_amount: stored"), "{stdout}");
    assert!(stderr.contains("1 projection difference"), "{stderr}");
    let out = fluxora(dir.path())
        .args(["--database-url", db, "rebuild"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    let summary: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(summary["comparison"]["differences"], 1);
    assert_eq!(summary["written"], true);
    assert!(verify().status.success());
}

/// Changes one stored stream row behind the indexer's back.
fn tamper(path: &Path) {
    let conn = format!("sqlite://{}", path.display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&conn).await.unwrap();
        let (key, state): (String, String) =
            sqlx::query_as("SELECT stream_key, state FROM streams ORDER BY stream_key LIMIT 1")
                .fetch_one(&mut c)
                .await
                .unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&state).unwrap();
        v["withdrawn_amount"] = serde_json::Value::String("123".into());
        sqlx::query("UPDATE streams SET state = ? WHERE stream_key = ?")
            .bind(v.to_string())
            .bind(key)
            .execute(&mut c)
            .await
            .unwrap();
    });
}
