//! Issue 17: the Ansible collection (`contrib/ansible/jailtx`, module
//! `jailtx.jailtx.jailtx`) and the rolling-upgrade playbook, driven by the
//! real ansible-playbook (installed by scripts/test into target/ansible-venv)
//! against four hosts on this machine (`ansible_connection: local`, each its
//! own `--root` with jails serving over loopback), with bundles signed by
//! the real `minisign` CLI. Check mode changes nothing; a rollout puts every
//! host on the new template and a second run changes nothing; a world whose
//! health check fails on the second host stops the rollout there (that host
//! back on the old template by its own rollback, the later hosts untouched).
//! `ansible-lint` passes and `ansible-doc` renders the module.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::minisign::Key;
use support::{JailDef, Root, RunState, Worlds, fleet, http_get, in_private_ns, world_version};

const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/ansible");

/// The virtualenv scripts/test fills with ansible-core and ansible-lint.
fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("JAILTX_TEST_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ansible-venv"));
    let bin = venv.join("bin").join(tool);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test (it installs ansible-core and ansible-lint into target/ansible-venv)",
        bin.display()
    );
    bin
}

/// `ansible-galaxy collection install contrib/ansible/jailtx` into `dir`;
/// returns the collections path to give ANSIBLE_COLLECTIONS_PATH.
fn install_collection(dir: &Path) -> PathBuf {
    let path = dir.join("collections");
    // No user or system config: an empty one of the test's own.
    std::fs::write(dir.join("ansible.cfg"), "[defaults]\n").unwrap();
    let out = ansible(venv_bin("ansible-galaxy"), &path)
        .args(["collection", "install", "--force", "-p"])
        .arg(&path)
        .arg(format!("{CONTRIB}/jailtx"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ansible-galaxy: {}", text(&out));
    assert!(
        path.join("ansible_collections/jailtx/jailtx/plugins/modules/jailtx.py")
            .is_file()
    );
    path
}

/// A command of the venv with the collection path, no user config, no
/// colour (the output is parsed), the venv's bin first on PATH.
fn ansible(tool: PathBuf, collections: &Path) -> Command {
    let bin = tool.parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new(tool);
    c.env("ANSIBLE_COLLECTIONS_PATH", collections)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_CONFIG", collections.with_file_name("ansible.cfg"))
        .env("ANSIBLE_HOME", collections.with_file_name("ansible-home"))
        .env(
            "ANSIBLE_LOCAL_TEMP",
            collections.with_file_name("ansible-tmp"),
        )
        .env(
            "ANSIBLE_REMOTE_TEMP",
            collections.with_file_name("ansible-tmp"),
        )
        .env("NO_COLOR", "1")
        .env("PATH", path);
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `ansible-lint` passes on the collection and the playbook (its default
/// profile and rules, offline).
#[test]
fn ansible_lint_passes_on_the_collection_and_the_playbook() {
    let dir = tempfile::tempdir().unwrap();
    let collections = install_collection(dir.path());
    let out = ansible(venv_bin("ansible-lint"), &collections)
        .args(["--offline", "jailtx", "playbooks/rolling-upgrade.yml"])
        .current_dir(CONTRIB)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "ansible-lint:\n{t}");
    assert!(t.contains("Passed") && t.contains("0 failure(s)"), "{t}");
}

/// `ansible-doc jailtx.jailtx.jailtx` renders DOCUMENTATION, EXAMPLES and
/// RETURN of the installed collection's module.
#[test]
fn ansible_doc_renders_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let collections = install_collection(dir.path());
    let out = ansible(venv_bin("ansible-doc"), &collections)
        .arg("jailtx.jailtx.jailtx")
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ansible-doc:\n{}", text(&out));
    for want in [
        "jailtx.jailtx.jailtx",
        "from_bundle",
        "canary_wait",
        "auto_recover",
        "EXAMPLES",
        "RETURN VALUES",
        "bundle_template_id",
        "--dry-run",
    ] {
        assert!(t.contains(want), "ansible-doc shows {want:?}:\n{t}");
    }
}

struct Host {
    name: String,
    root: Root,
    jails: Vec<JailDef>,
    bundles: PathBuf,
}

impl Host {
    fn id(&self) -> String {
        self.root.json(&["template", "show"])["template_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// What each jail serves over loopback.
    fn pages(&self) -> Vec<String> {
        self.jails
            .iter()
            .map(|j| http_get(&j.ip).unwrap_or_else(|e| e))
            .collect()
    }

    fn says(&self, version: u32) {
        for (j, page) in self.jails.iter().zip(self.pages()) {
            assert_eq!(
                page,
                format!("{} {}", j.hostname, world_version(version)),
                "{}: jail {}",
                self.name,
                j.name
            );
        }
    }
}

/// Runs the playbook with `bundle` (and `--check` when `check`); returns
/// whether it succeeded and its output.
fn playbook(collections: &Path, inventory: &Path, bundle: &Path, check: bool) -> (bool, String) {
    let mut c = ansible(venv_bin("ansible-playbook"), collections);
    c.arg("-i")
        .arg(inventory)
        .arg(format!("{CONTRIB}/playbooks/rolling-upgrade.yml"))
        .arg("-e")
        .arg(format!("jailtx_bundle={}", bundle.display()));
    if check {
        c.arg("--check");
    }
    let started = std::time::Instant::now();
    let out = c.output().unwrap();
    let t = text(&out);
    println!(
        "ansible-playbook {}{}: {:?} in {:.1} s",
        bundle.file_name().unwrap().to_string_lossy(),
        if check { " --check" } else { "" },
        out.status.code(),
        started.elapsed().as_secs_f64()
    );
    (out.status.success(), t)
}

/// The PLAY RECAP line of each host: name -> (changed, failed).
fn recap(output: &str) -> BTreeMap<String, (u32, u32)> {
    let tail = output.rsplit("PLAY RECAP").next().unwrap_or("");
    let field = |line: &str, key: &str| -> u32 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX)
    };
    tail.lines()
        .filter(|l| l.contains(" : ok="))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap().to_owned();
            (name, (field(l, "changed"), field(l, "failed")))
        })
        .collect()
}

/// Four hosts on loopback, each its own root with two running jails on world
/// 1; a packer root makes bundles of world 2 and world 3, signed by one key
/// every host trusts (`require_signature`). Host 2's health check refuses
/// world 3.
///
/// - `--check` with world 2: the playbook succeeds, and no host's history,
///   template or jails change.
/// - world 2: every host ends on the bundle's template, every jail serves
///   world 2 and the module reported the new id; the same run again reports
///   `changed=0` on every host (the module compares verified ids).
/// - world 3: the canary host 1 is upgraded; host 2's upgrade fails its
///   health check and rolls itself back to world 2 (its jails serve world
///   2); hosts 3 and 4 are never touched (no bundle copied, no transaction,
///   JIDs unchanged); the play fails.
#[test]
fn rolling_upgrade_across_four_hosts() {
    if !in_private_ns("rolling_upgrade_across_four_hosts") {
        return;
    }
    let worlds = Worlds::new();
    let work = tempfile::Builder::new()
        .prefix("jailtx-ansible")
        .tempdir_in("/var/tmp")
        .unwrap();
    let work = work.path();
    let collections = install_collection(work);
    let key = Key::new(work, "fleet");

    let packer = Root::fresh();
    packer.template(&worlds.get(2));
    let b2 = work.join("world2.jtxb");
    packer.ok(&["template", "pack", "--output", b2.to_str().unwrap()]);
    let id2 = packer.json(&["template", "show"])["template_id"]
        .as_str()
        .unwrap()
        .to_owned();
    packer.ok(&["upgrade", "--from-dir", worlds.get(3).to_str().unwrap()]);
    let b3 = work.join("world3.jtxb");
    packer.ok(&["template", "pack", "--output", b3.to_str().unwrap()]);
    let id3 = packer.json(&["template", "show"])["template_id"]
        .as_str()
        .unwrap()
        .to_owned();
    key.sign(&b2, "fleet build");
    key.sign(&b3, "fleet build");

    let hosts: Vec<Host> = (1..=4)
        .map(|n| {
            let jails = fleet(&[("ns", RunState::Running), ("www", RunState::Running)]);
            let root = Root::with_jails(None, &worlds.get(1), &jails);
            // After the first template (from a directory, unsigned): from
            // here on only signed bundles go in.
            let mut config = format!(
                "[trust]\nkeys = [{:?}]\nrequire_signature = true\n",
                key.line()
            );
            if n == 2 {
                config.push_str(&format!(
                    "[health]\ncommand = \"! grep -q 'world 3' {}/$JAIL_NAME/usr/share/misc/world-version\"\ntimeout_secs = 10\n",
                    root.j().display()
                ));
            }
            root.write("jailtx.toml", &config);
            Host {
                name: format!("host{n}"),
                bundles: work.join(format!("bundles-{n}")),
                root,
                jails,
            }
        })
        .collect();

    let venv_python = venv_bin("python");
    let mut inventory = format!(
        "all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {}\n    jailtx_program: {}\n  hosts:\n",
        venv_python.display(),
        support::BIN
    );
    for (i, h) in hosts.iter().enumerate() {
        inventory.push_str(&format!(
            "    {}:\n      jailtx_root: {}\n      jailtx_bundle_dir: {}\n",
            h.name,
            h.root.root.display(),
            h.bundles.display()
        ));
        if i == 0 {
            inventory.push_str("      jailtx_canary_jails: [ns]\n      jailtx_canary_wait: 1\n");
        }
    }
    let inv = work.join("hosts.yml");
    std::fs::write(&inv, inventory).unwrap();

    struct Before {
        tx: usize,
        jids: BTreeMap<String, Option<u64>>,
        id: String,
    }
    let before = |hosts: &[Host]| -> Vec<Before> {
        hosts
            .iter()
            .map(|h| Before {
                tx: h.root.transactions().len(),
                jids: h.root.jids(),
                id: h.id(),
            })
            .collect()
    };
    let unchanged = |h: &Host, b: &Before, what: &str| {
        assert_eq!(
            h.root.transactions().len(),
            b.tx,
            "{what}: {} history",
            h.name
        );
        assert_eq!(h.root.jids(), b.jids, "{what}: {} jails", h.name);
        assert_eq!(h.id(), b.id, "{what}: {} template", h.name);
    };

    // Check mode: every host verifies the bundle and plans; nothing changes.
    let b = before(&hosts);
    let (ok, out) = playbook(&collections, &inv, &b2, true);
    assert!(ok, "--check:\n{out}");
    for (h, b) in hosts.iter().zip(&b) {
        unchanged(h, b, "--check");
        h.says(1);
    }

    // The rollout: every host on world 2's bundle.
    let (ok, out) = playbook(&collections, &inv, &b2, false);
    assert!(ok, "rollout:\n{out}");
    for h in &hosts {
        assert_eq!(h.id(), id2, "{} on the bundle's template:\n{out}", h.name);
        h.says(2);
        let t = h.root.transactions();
        let upgrade = t.iter().rev().find(|t| t["op"] == "upgrade").unwrap();
        assert_eq!(upgrade["outcome"], "committed", "{}", h.name);
        assert!(
            out.contains(&format!("\"{}\": \"{id2}\"", h.name)),
            "the final play prints {}'s id:\n{out}",
            h.name
        );
    }
    // Host 1's upgrade had its canary phase (a health check of the canary
    // and the wait: two steps more than host 3's, the same jails
    // otherwise).
    let upgrade_steps = |h: &Host| {
        h.root
            .transactions()
            .iter()
            .rev()
            .find(|t| t["op"] == "upgrade")
            .map(|t| t["steps"].as_u64().unwrap())
            .unwrap()
    };
    assert_eq!(
        upgrade_steps(&hosts[0]),
        upgrade_steps(&hosts[2]) + 2,
        "host1's upgrade switched its canary jail first"
    );

    // The same run again: nothing to do anywhere.
    let b = before(&hosts);
    let (ok, out) = playbook(&collections, &inv, &b2, false);
    assert!(ok, "second rollout:\n{out}");
    let r = recap(&out);
    assert_eq!(r.len(), 4, "{out}");
    for (h, b) in hosts.iter().zip(&b) {
        assert_eq!(r[&h.name], (0, 0), "{} changed nothing:\n{out}", h.name);
        unchanged(h, b, "second rollout");
    }

    // World 3, whose health check fails on host 2.
    let b = before(&hosts);
    let (ok, out) = playbook(&collections, &inv, &b3, false);
    assert!(!ok, "the play reports the failure:\n{out}");
    let r = recap(&out);
    assert_eq!(hosts[0].id(), id3, "host1 upgraded:\n{out}");
    hosts[0].says(3);
    assert_eq!(r.get("host1").map(|x| x.1), Some(0), "{out}");
    assert_eq!(r.get("host2").map(|x| x.1), Some(1), "host2 failed:\n{out}");
    assert_eq!(hosts[1].id(), id2, "host2 back on the old template:\n{out}");
    hosts[1].says(2);
    let t = hosts[1].root.transactions();
    assert_eq!(t.len(), b[1].tx + 1, "host2 ran one upgrade: {t:?}");
    assert_eq!(t.last().unwrap()["op"], "upgrade", "{t:?}");
    assert_eq!(t.last().unwrap()["outcome"], "rolled-back", "{t:?}");
    for (h, b) in hosts.iter().zip(&b).skip(2) {
        unchanged(h, b, "after host2 failed");
        h.says(2);
        assert!(
            !h.bundles.join("world3.jtxb").exists(),
            "{} never got the bundle",
            h.name
        );
        assert_eq!(
            r.get(&h.name).map(|x| x.0),
            None,
            "{} not in the recap:\n{out}",
            h.name
        );
    }
}

/// Runs the module once on localhost with `args` (a JSON object); returns
/// whether Ansible reported success and the module's result.
fn module(
    collections: &Path,
    args: &serde_json::Value,
    check: bool,
) -> (bool, serde_json::Value, String) {
    let mut c = ansible(venv_bin("ansible"), collections);
    c.args(["all", "-i", "localhost,", "-c", "local", "-e"])
        .arg(format!(
            "ansible_python_interpreter={}",
            venv_bin("python").display()
        ))
        .args(["-m", "jailtx.jailtx.jailtx", "-a"])
        .arg(args.to_string());
    if check {
        c.arg("--check");
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (head, doc) = stdout
        .split_once(" => ")
        .unwrap_or_else(|| panic!("ansible {args}: {}", text(&out)));
    let result: serde_json::Value =
        serde_json::from_str(doc).unwrap_or_else(|e| panic!("ansible {args}: {e}: {}", text(&out)));
    (
        head.contains("SUCCESS") || head.contains("CHANGED"),
        result,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The module's mapping of jailtx's exit codes and check mode, one root
/// without jails: exit 7 (an `/etc` conflict in skel) is changed with the
/// conflict in `conflicts` and a warning; check mode runs `--dry-run`
/// (the plan returned, no history row); exit 3 fails with the drift listed;
/// exit 4 fails with jailtx's message, and `recover` then changes the host.
#[test]
fn module_maps_exit_codes_and_check_mode() {
    if !in_private_ns("module_maps_exit_codes_and_check_mode") {
        return;
    }
    let worlds = Worlds::new();
    let work = tempfile::tempdir().unwrap();
    let collections = install_collection(work.path());
    let root = Root::fresh();
    root.template(&worlds.get(1));
    let args = |extra: serde_json::Value| {
        let mut a = serde_json::json!({
            "root": root.root.display().to_string(),
            "program": support::BIN,
        });
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };

    let (ok, r, _) = module(
        &collections,
        &args(serde_json::json!({"command": "audit"})),
        false,
    );
    assert!(ok, "{r}");
    assert_eq!(r["changed"], false, "{r}");
    assert_eq!(r["json"]["clean"], true, "{r}");

    // template build from a bundle (unsigned: this root trusts no key),
    // on another root: built once, then nothing to do.
    let b1 = work.path().join("world1.jtxb");
    root.ok(&["template", "pack", "--output", b1.to_str().unwrap()]);
    let id1 = root.json(&["template", "show"])["template_id"].clone();
    let other = Root::fresh();
    let build = serde_json::json!({
        "command": "template", "subcommand": "build",
        "from_bundle": b1.display().to_string(),
        "root": other.root.display().to_string(), "program": support::BIN,
    });
    let (ok, r, _) = module(&collections, &build, false);
    assert!(ok, "{r}");
    assert_eq!(
        (&r["changed"], &r["template_id"]),
        (&serde_json::json!(true), &id1),
        "{r}"
    );
    let (ok, r, _) = module(&collections, &build, false);
    assert!(ok, "{r}");
    assert_eq!(
        r["changed"], false,
        "the template is already the bundle's: {r}"
    );
    assert_eq!(other.transactions().len(), 2, "init and one build");

    // skel's /etc/hosts edited here, and changed by the new world too.
    root.write("j/skel/etc/hosts", "127.0.0.1 localhost here\n");
    let w2 = work.path().join("world2-hosts");
    let st = Command::new("cp")
        .arg("-a")
        .arg(worlds.get(2))
        .arg(&w2)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(w2.join("etc/hosts"), "127.0.0.1 localhost world2\n").unwrap();
    let (ok, r, warned) = module(
        &collections,
        &args(serde_json::json!({"command": "upgrade", "from_dir": w2.display().to_string()})),
        false,
    );
    assert!(ok, "exit 7 is not a failure: {r}");
    assert_eq!(r["exit_code"], 7, "{r}");
    assert_eq!(r["changed"], true, "{r}");
    let conflicts = r["conflicts"].to_string();
    assert!(conflicts.contains("skel:/etc/hosts"), "{r}");
    assert!(
        warned.contains("/etc needs the operator: skel:/etc/hosts"),
        "a warning names the conflict: {warned}"
    );
    assert_eq!(r["json"]["changed"], true, "the whole document: {r}");

    // Check mode: the dry run's plan, nothing done.
    let tx = root.transactions().len();
    let (ok, r, _) = module(
        &collections,
        &args(serde_json::json!({"command": "rollback"})),
        true,
    );
    assert!(ok, "{r}");
    assert_eq!(r["changed"], true, "{r}");
    assert!(r["cmd"].to_string().contains("--dry-run"), "{r}");
    assert!(!r["plan"]["steps"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(root.transactions().len(), tx, "check mode ran nothing");

    // Exit 3: the drift listed.
    let f = root.j().join("mroot/usr/share/misc/world-version");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&f, bytes).unwrap();
    let (ok, r, _) = module(
        &collections,
        &args(serde_json::json!({"command": "audit"})),
        false,
    );
    assert!(!ok, "{r}");
    assert_eq!(r["exit_code"], 3, "{r}");
    assert_eq!(r["drift"][0]["template"], "mroot", "{r}");
    assert!(r["drift"][0].to_string().contains("world-version"), "{r}");
    assert!(r["msg"].as_str().unwrap().contains("drift"), "{r}");

    // Exit 4: a transaction killed halfway; the module fails naming
    // recover, and recover finishes it.
    let out = root.run_env(
        &["upgrade", "--from-dir", worlds.get(3).to_str().unwrap()],
        &[("JAILTX_FAULT", "after-done:3")],
    );
    out.assert_killed("the upgrade under JAILTX_FAULT");
    let (ok, r, _) = module(
        &collections,
        &args(serde_json::json!({"command": "rollback"})),
        false,
    );
    assert!(!ok, "{r}");
    assert_eq!(r["exit_code"], 4, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("recover"), "{r}");
    let (ok, r, _) = module(
        &collections,
        &args(serde_json::json!({"command": "recover"})),
        false,
    );
    assert!(ok, "{r}");
    assert_eq!(r["changed"], true, "{r}");
    // auto_recover: an upgrade from a bundle finishes an interrupted
    // transaction first (its verifying dry run alone would exit 4).
    let out = root.run_env(
        &["upgrade", "--from-dir", worlds.get(2).to_str().unwrap()],
        &[("JAILTX_FAULT", "after-done:3")],
    );
    out.assert_killed("the second upgrade under JAILTX_FAULT");
    let (ok, r, _) = module(
        &collections,
        &args(
            serde_json::json!({"command": "upgrade", "from_bundle": b1.display().to_string(), "auto_recover": true}),
        ),
        false,
    );
    assert!(ok, "{r}");
    assert_eq!(r["changed"], true, "{r}");
    assert!(r["recovered"]["recovered"].is_object(), "{r}");
    assert_eq!(r["template_id"], id1, "{r}");
    let (ok, r, _) = module(
        &collections,
        &args(serde_json::json!({"command": "recover"})),
        false,
    );
    assert!(ok, "{r}");
    assert_eq!(r["changed"], false, "nothing left to recover: {r}");
}
