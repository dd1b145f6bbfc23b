//! Loading a service's configuration: a TOML file, then `RONDO_*`
//! environment variables over it, so that a container can set any key
//! without a file of its own.
//!
//! A variable `PREFIX` + `KEY` sets the key `key` (lowercased); a double
//! underscore goes one table down: `RONDO_NODE_RING__SEEDS` sets
//! `[ring] seeds`. Its value is read as a TOML value when it is one
//! (`7400`, `true`, `["http://a:7400"]`, `"quoted"`), and as a string
//! otherwise (`/data`, `0.0.0.0:7400`).

use std::path::Path;

use serde::de::DeserializeOwned;

/// Reads the configuration from `file` (if any) and the variables of `env`
/// that begin with `prefix`, except those named in `skip` (the variable
/// that names the file itself, for one). Errors name the file or the
/// variable at fault.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    prefix: &str,
    skip: &[&str],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, String> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            toml::from_str::<toml::Table>(&text)
                .map_err(|e| format!("parse {}: {e}", path.display()))?
        }
        None => toml::Table::new(),
    };
    let mut set = Vec::new();
    let mut typed = Vec::new();
    for (name, value) in env {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        if key.is_empty() || skip.contains(&name.as_str()) {
            continue;
        }
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("{name}: not a configuration key"));
        }
        let v = value_of(&value);
        if !v.is_str() && !v.is_array() && !v.is_table() {
            typed.push((name.clone(), path.clone(), value.clone()));
        }
        overlay(&mut table, &path, v).map_err(|e| format!("{name}: {e}"))?;
        set.push(name);
    }
    let from = match (file, set.is_empty()) {
        (Some(path), true) => path.display().to_string(),
        (Some(path), false) => format!("{} and {}", path.display(), set.join(", ")),
        (None, _) => format!("the environment ({})", set.join(", ")),
    };
    let first = match T::deserialize(table.clone()) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    // A value that reads as a number, a boolean or a date may have been
    // meant as a string (`RONDO_NODE_RING__ZONE=1`): try each as one.
    for (name, path, text) in &typed {
        let mut again = table.clone();
        if overlay(&mut again, path, toml::Value::String(text.clone())).is_ok()
            && let Ok(config) = T::deserialize(again)
        {
            tracing::debug!(variable = %name, "read as a string");
            return Ok(config);
        }
    }
    Err(format!("configuration from {from}: {first}"))
}

/// The process's environment variables that are valid UTF-8 (the others
/// cannot be configuration; `std::env::vars` would panic on them).
pub fn environment() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// Writes `bytes` to `path` through a temporary file beside it and a
/// rename, so that a reader finds either nothing or all of it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A variable's value: TOML if it reads as a TOML value, a string
/// otherwise.
fn value_of(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn overlay(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("not a configuration key".into()),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [key, rest @ ..] => {
            let inner = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match inner {
                toml::Value::Table(t) => overlay(t, rest, value),
                _ => Err(format!("{key} is not a table")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        data_dir: PathBuf,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        ring: Ring,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Ring {
        #[serde(default)]
        seeds: Vec<String>,
        #[serde(default)]
        auto_join: bool,
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn check(file: Option<&str>, vars: &[(&str, &str)], expect: Result<Conf, &str>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let got: Result<Conf, String> = super::load(
            file.map(|_| path.as_path()),
            "RONDO_NODE_",
            &["RONDO_NODE_CONFIG"],
            env(vars),
        );
        match (got, expect) {
            (Ok(g), Ok(e)) => assert_eq!(g, e),
            (Err(g), Err(e)) => assert!(g.contains(e), "{g:?} does not say {e:?}"),
            (g, e) => panic!("got {g:?}, expected {e:?}"),
        }
    }

    #[test]
    fn the_environment_overrides_the_file_key_by_key() {
        let conf = |dir: &str, port, seeds: &[&str], auto_join| Conf {
            data_dir: dir.into(),
            port,
            ring: Ring {
                seeds: seeds.iter().map(|s| (*s).to_string()).collect(),
                auto_join,
            },
        };
        let file = "data_dir = \"/f\"\nport = 1\n[ring]\nseeds = [\"http://a:1\"]\n";
        check(Some(file), &[], Ok(conf("/f", 1, &["http://a:1"], false)));
        check(
            Some(file),
            &[
                ("RONDO_NODE_PORT", "7400"),
                ("RONDO_NODE_RING__AUTO_JOIN", "true"),
                ("RONDO_NODE_CONFIG", "/ignored"),
                ("RONDO_NODES", "not ours"),
                ("HOME", "/root"),
            ],
            Ok(conf("/f", 7400, &["http://a:1"], true)),
        );
        // Without a file; a bare word is a string, a TOML array a list.
        check(
            None,
            &[
                ("RONDO_NODE_DATA_DIR", "/data"),
                (
                    "RONDO_NODE_RING__SEEDS",
                    "[\"http://n1:7400\", \"http://n2:7400\"]",
                ),
            ],
            Ok(conf(
                "/data",
                0,
                &["http://n1:7400", "http://n2:7400"],
                false,
            )),
        );
    }

    #[test]
    fn a_wrong_variable_is_named() {
        check(
            None,
            &[("RONDO_NODE_DATA_DIR", "/d"), ("RONDO_NODE_PROT", "1")],
            Err("RONDO_NODE_PROT"),
        );
        check(
            None,
            &[("RONDO_NODE_DATA_DIR", "/d"), ("RONDO_NODE_PORT", "many")],
            Err("RONDO_NODE_PORT"),
        );
        check(
            Some("data_dir = \"/d\"\nport = 3\n"),
            &[("RONDO_NODE_PORT__X", "1")],
            Err("RONDO_NODE_PORT__X: port is not a table"),
        );
        check(
            None,
            &[("RONDO_NODE_RING____X", "1")],
            Err("not a configuration key"),
        );
        check(Some("data_dir = "), &[], Err("parse"));
    }
}
