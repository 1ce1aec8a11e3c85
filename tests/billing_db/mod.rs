//! Databases for the billing tests: a fresh SQLite file, and a fresh schema
//! on the real PostgreSQL server (scripts/test.sh makes sure one runs).

#![allow(dead_code)]

use std::path::PathBuf;

use switchboard::billing::{self, ProviderRecord};

/// The PostgreSQL server the tests use: `SWITCHBOARD_TEST_POSTGRES`, or the
/// local server scripts/test.sh starts.
pub fn postgres_base() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database for one test, removed when dropped: the SQLite file, or the
/// PostgreSQL schema (so repeated runs leave nothing behind on the server).
pub struct TestDb {
    /// What the billing config names.
    pub url: String,
    /// `sqlite` or `postgres`, for messages.
    pub kind: &'static str,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime: use a thread of our own.
        let base = postgres_base();
        let _ = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(async move {
                    let mut conn = sqlx::PgConnection::connect(&base).await?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut conn)
                        .await?;
                    Ok::<_, sqlx::Error>(())
                })
                .map_err(std::io::Error::other)
        })
        .join();
    }
}

impl TestDb {
    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: PathBuf = dir.path().join("billing.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            kind: "sqlite",
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A new schema on the PostgreSQL server; every connection of the pool
    /// gets it as its search path.
    pub async fn postgres(test: &str) -> TestDb {
        use sqlx::Connection;
        let base = postgres_base();
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {base} is not reachable ({e}); run ./scripts/test.sh, which \
                 installs and starts it, or set SWITCHBOARD_TEST_POSTGRES"
                )
            });
        let schema = format!(
            "sb_{}_{}_{}",
            test,
            std::process::id(),
            rand::random::<u32>()
        );
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        TestDb {
            url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
            kind: "postgres",
            _dir: None,
            schema: Some(schema),
        }
    }

    /// A billing configuration for host `host` on this database.
    pub fn config(&self, host: &str) -> billing::Config {
        billing::Config {
            database: self.url.clone(),
            host_id: host.to_string(),
            ..billing::Config::default()
        }
    }
}

/// The seed's two providers.
pub fn providers() -> Vec<ProviderRecord> {
    ["PROXICOM", "PAKLINE"]
        .iter()
        .enumerate()
        .map(|(i, name)| ProviderRecord {
            name: name.to_string(),
            target: format!("127.0.0.1:{}", 5080 + i),
            username: None,
            password: None,
            enabled: true,
        })
        .collect()
}

/// A rate sheet for the seed's example: London via PROXICOM at 0.014/min,
/// German mobiles via PAKLINE at 0.01204/min, and a few others.
pub const RATES_CSV: &str = "provider,prefix,price_per_minute,increment_secs,connect_fee\n\
    PROXICOM,44,0.02,1,0\n\
    PROXICOM,4420,0.014,,\n\
    PROXICOM,49,0.03,,\n\
    PAKLINE,49,0.015,,\n\
    PAKLINE,4915,0.01204,,\n\
    PAKLINE,1,0.06,60,0.01\n";
