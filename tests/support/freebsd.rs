//! A FreeBSD host of the tests: a scratch root playing `/`, a config that
//! points every FreeBSD path into it, and the simulated host's runner.

use std::path::PathBuf;

use jailtx::config::{Config, Layout};
use jailtx::engine::{Plan, action};
use jailtx::host::freebsd::FreeBsdHost;
use jailtx::host::freebsd_sim::SimFreeBsd;
use jailtx::ops::jail::Site;
use jailtx::plan::Backend;

pub struct SimHost {
    _tmp: tempfile::TempDir,
    /// The scratch root: plays `/` of the FreeBSD host.
    pub root: PathBuf,
    pub cfg: Config,
    pub layout: Layout,
    pub sim: SimFreeBsd,
    pub host: FreeBsdHost,
}

impl SimHost {
    /// BASE at `ROOT/base` (e.g. `usr/home`), the state dir at
    /// `/var/db/jailtx`, the jail.conf.d and fstab files under `/etc`;
    /// nothing planned yet (not even `init`).
    pub fn on(base: &str, sim: SimFreeBsd) -> SimHost {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let mut cfg = Config {
            base: root.join(base),
            state_dir: root.join("var/db/jailtx"),
            ..Config::default()
        };
        cfg.freebsd.jail_conf_dir = root.join("etc/jail.conf.d");
        cfg.freebsd.fstab_dir = root.join("etc");
        for d in ["usr", "etc", "var/db/jailtx"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let layout = Layout::new(&cfg).unwrap();
        let host = FreeBsdHost::with_config(Box::new(sim.clone()), &cfg.freebsd);
        SimHost {
            _tmp: tmp,
            root,
            cfg,
            layout,
            sim,
            host,
        }
    }

    /// What the planners plan for: this host, as the FreeBSD backend.
    pub fn site(&self) -> Site<'_> {
        Site {
            layout: &self.layout,
            cfg: &self.cfg,
            host: &self.host,
            backend: Backend::FreeBsd,
        }
    }

    /// Carries out every step of `plan` on the simulated host, in order
    /// (the engine and its journal are not what these tests look at).
    pub fn apply_steps(&self, plan: &Plan) {
        plan.validate().unwrap();
        for step in &plan.steps {
            action::apply(&step.action, &self.host)
                .unwrap_or_else(|e| panic!("{} {}: {e}", plan.op, step.name));
        }
    }
}
