#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: jailtx contributors
# SPDX-License-Identifier: BSD-2-Clause
"""Runs one jailtx command with --json and maps its exit code and JSON document to an Ansible result."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: jailtx
short_description: Run a jailtx transaction (upgrade, rollback, recover, audit, ...) on a jail host
version_added: "0.1.0"
description:
  - Runs the C(jailtx) command line tool on the managed host with C(--json)
    and maps its exit code and JSON document to the module's result.
  - jailtx manages FreeBSD jails that share one read-only template; every
    change is a journaled transaction that a crash never leaves half done.
  - Exit 0 is success; C(changed) comes from the JSON document.
    Exit 7 (done, but C(/etc) needs the operator) is success with C(changed)
    and one warning per C(/etc) conflict, refusal or unresolved proposal.
    Exit 3 (audit found drift) fails with the drift listed in RV(drift).
    Exit 1 (failed and rolled back), 2 (bad input), 4 (an interrupted
    transaction is pending), 5 (another run holds the lock) and 6 (failed and
    could not be rolled back) fail with jailtx's message.
  - In check mode a mutating command runs with C(--dry-run) and returns the
    step plan in RV(plan); read-only commands (C(status), C(audit),
    C(template show)) run as usual.
  - An C(upgrade) from a bundle is idempotent. The module first runs
    C(upgrade --dry-run), which verifies the bundle's signature against the
    host's C([trust]) keys and reads its template id. When that id is
    already the current template's (C(template show)), nothing runs and
    the result is C(changed=false).
options:
  command:
    description: The jailtx command to run.
    type: str
    required: true
    choices: [upgrade, rollback, recover, audit, status, jail, start, stop, restart, etc-merge, template]
  subcommand:
    description:
      - For O(command=template), one of C(build), C(pack), C(show).
      - For O(command=jail), one of C(create), C(destroy).
    type: str
    choices: [build, pack, show, create, destroy]
  from_dir:
    description: C(--from-dir) for C(upgrade) and C(template build), a directory holding a world.
    type: path
  from_tar:
    description: C(--from-tar) for C(upgrade) and C(template build), an archive such as FreeBSD's C(base.txz).
    type: path
  from_cmd:
    description: C(--from-cmd) for C(upgrade) and C(template build), a command that installs a world into C({dest}).
    type: str
  from_bundle:
    description:
      - C(--from-bundle) for C(upgrade) and C(template build), a bundle made by C(jailtx template pack).
      - Its minisign signature must be beside it as C(FILE.minisig) when the host's config trusts keys.
    type: path
  canary:
    description: C(--canary) for C(upgrade), the jails switched first, which must stay healthy before the rest switch.
    type: list
    elements: str
  canary_wait:
    description: C(--canary-wait) for C(upgrade), seconds the canaries run before their health is checked again.
    type: int
  to:
    description: C(--to) for C(rollback), the archived template to switch back to (C(mroot.YYYYMMDD[.N])); default the newest archive.
    type: str
  rollback:
    description: C(--rollback) for C(recover), roll the interrupted transaction back instead of resuming it.
    type: bool
    default: false
  names:
    description:
      - The jails for C(start), C(stop), C(restart) and C(etc-merge) (default all).
      - For C(jail create) and C(jail destroy), exactly one name.
    type: list
    elements: str
    default: []
  hostname:
    description: C(--hostname) for C(jail create).
    type: str
  ip:
    description: C(--ip) for C(jail create).
    type: str
  start:
    description: C(--start) for C(jail create).
    type: bool
    default: false
  purge:
    description: C(--purge) for C(jail destroy), also remove the jail's read-write data.
    type: bool
    default: false
  templates:
    description: The templates for C(audit) (default C(mroot)).
    type: list
    elements: str
    default: []
  all:
    description: C(--all) for C(audit), every template and archive.
    type: bool
    default: false
  quick:
    description: C(--quick) for C(audit), compare sizes and times only.
    type: bool
    default: false
  template:
    description: The template for C(template pack) and C(template show) (default C(mroot)).
    type: str
  output:
    description: C(--output) for C(template pack), the bundle file to write.
    type: path
  auto_recover:
    description: C(--auto-recover), finish an interrupted transaction first instead of failing with exit 4.
    type: bool
    default: false
  root:
    description: C(--root), one folder holding BASE, the state dir and the config.
    type: path
  config:
    description: C(--config), the config file.
    type: path
  backend:
    description: C(--backend), which host backend carries out mounts and jails (C(freebsd), C(linux)).
    type: str
  program:
    description: The jailtx program, a name looked up on E(PATH) or a path.
    type: str
    default: jailtx
attributes:
  check_mode:
    support: full
    details: Mutating commands run with C(--dry-run) and return the plan.
  diff_mode:
    support: none
notes:
  - Needs only ansible-core on the controller and C(jailtx) on the managed host.
seealso:
  - name: jailtx(8)
    description: The reference for every command, option and exit code.
    link: https://github.com/jailtx/jailtx/blob/main/contrib/man/jailtx.8
author:
  - jailtx contributors
"""

EXAMPLES = r"""
- name: Upgrade to a signed bundle, canary jail ns first
  jailtx.jailtx.jailtx:
    command: upgrade
    from_bundle: /var/tmp/jailtx/base-14.2.jtxb
    canary: [ns]
    canary_wait: 60

- name: Verify the bundle and show the plan, changing nothing
  jailtx.jailtx.jailtx:
    command: upgrade
    from_bundle: /var/tmp/jailtx/base-14.2.jtxb
  check_mode: true

- name: Audit the current template (fails listing the drift)
  jailtx.jailtx.jailtx:
    command: audit

- name: Back to the newest archived template
  jailtx.jailtx.jailtx:
    command: rollback

- name: Finish an interrupted transaction by rolling it back
  jailtx.jailtx.jailtx:
    command: recover
    rollback: true

- name: The current template's id and signer
  jailtx.jailtx.jailtx:
    command: template
    subcommand: show
  register: shown

- name: Start two jails, under a scratch root
  jailtx.jailtx.jailtx:
    command: start
    names: [ns, www]
    root: /srv/jails
"""

RETURN = r"""
json:
  description: The whole JSON document jailtx printed on stdout.
  returned: when jailtx printed one
  type: dict
  sample: {"changed": true, "report": {"tx": 9, "op": "upgrade", "outcome": "committed"}}
exit_code:
  description:
    - jailtx's exit code (0 done, 1 rolled back, 2 bad input, 3 drift, 4 pending, 5 locked, 6 operator needed, 7 /etc needs the operator).
    - Not named C(rc), which Ansible reads as failed whenever it is not 0 (exit 7 is a success).
  returned: when jailtx ran
  type: int
  sample: 0
cmd:
  description: The command line run (the last one, when the module ran several).
  returned: when jailtx ran
  type: list
  elements: str
  sample: [jailtx, --json, upgrade, --from-bundle, /var/tmp/jailtx/base.jtxb]
stderr:
  description: jailtx's log lines and error message.
  returned: when jailtx ran
  type: str
plan:
  description: The step plan of a dry run (check mode, or the verification before a bundle upgrade).
  returned: in check mode for mutating commands, and for upgrade from a bundle
  type: dict
template_id:
  description: The template id the host is on after the module (for upgrade from a bundle, and template show).
  returned: for upgrade from a bundle and template show
  type: str
  sample: 24d5a2f31f3deac2764b55341809aca8b62f937360e8021910c74fd5bbacd411
bundle_template_id:
  description: The template id of O(from_bundle), read by jailtx after verifying its signature.
  returned: when O(from_bundle) is given
  type: str
drift:
  description: For exit 3, each drifted template with its counts and differences.
  returned: when the audit found drift
  type: list
  elements: dict
recovered:
  description: With O(auto_recover) and O(from_bundle), the JSON document of the C(recover) run first (a dry run never recovers).
  returned: when an interrupted transaction was finished first
  type: dict
conflicts:
  description: For exit 7, each /etc conflict, refusal or unresolved proposal as C(TARGET:PATH - WHY).
  returned: when /etc needs the operator
  type: list
  elements: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

# Commands that change the host: check mode gives them --dry-run.
MUTATING = frozenset(["upgrade", "rollback", "recover", "jail", "start", "stop", "restart", "etc-merge"])

EXIT_WHAT = {
    1: "failed and rolled back (the host is as before)",
    2: "bad usage or input, nothing changed",
    4: "an interrupted transaction is pending; run recover (or pass auto_recover)",
    5: "another jailtx run holds the lock",
    6: "failed and could not be rolled back; the operator is needed",
}


def source_args(p):
    args = []
    for opt in ("from_dir", "from_tar", "from_cmd", "from_bundle"):
        if p[opt] is not None:
            args += ["--" + opt.replace("_", "-"), p[opt]]
    return args


def command_args(module):
    """The subcommand and its arguments, checked against the command."""
    p = module.params
    cmd = p["command"]
    sub = p["subcommand"]
    given_source = [o for o in ("from_dir", "from_tar", "from_cmd", "from_bundle") if p[o] is not None]
    if cmd == "upgrade" or (cmd == "template" and sub == "build"):
        if len(given_source) != 1:
            module.fail_json(msg="%s needs exactly one of from_dir, from_tar, from_cmd, from_bundle" % cmd)
    elif given_source:
        module.fail_json(msg="from_dir, from_tar, from_cmd and from_bundle are for upgrade and template build only")
    if (p["canary"] or p["canary_wait"] is not None) and cmd != "upgrade":
        module.fail_json(msg="canary and canary_wait are for upgrade only")
    if p["canary_wait"] is not None and not p["canary"]:
        module.fail_json(msg="canary_wait needs canary")
    if cmd == "upgrade":
        args = ["upgrade"] + source_args(p)
        if p["canary"]:
            args += ["--canary", ",".join(p["canary"])]
        if p["canary_wait"] is not None:
            args += ["--canary-wait", str(p["canary_wait"])]
        return args
    if cmd == "rollback":
        return ["rollback"] + (["--to", p["to"]] if p["to"] else [])
    if cmd == "recover":
        return ["recover"] + (["--rollback"] if p["rollback"] else [])
    if cmd == "audit":
        if p["all"] and p["templates"]:
            module.fail_json(msg="give templates or all, not both")
        return ["audit"] + list(p["templates"]) + (["--all"] if p["all"] else []) + (["--quick"] if p["quick"] else [])
    if cmd == "status":
        return ["status"]
    if cmd in ("start", "stop", "restart", "etc-merge"):
        return [cmd] + list(p["names"])
    if cmd == "jail":
        if sub not in ("create", "destroy") or len(p["names"]) != 1:
            module.fail_json(msg="jail needs subcommand create or destroy and exactly one name in names")
        if sub == "create":
            if not p["hostname"] or not p["ip"]:
                module.fail_json(msg="jail create needs hostname and ip")
            args = ["jail", "create", p["names"][0], "--hostname", p["hostname"], "--ip", p["ip"]]
            return args + (["--start"] if p["start"] else [])
        return ["jail", "destroy", p["names"][0]] + (["--purge"] if p["purge"] else [])
    if cmd == "template":
        if sub == "build":
            return ["template", "build"] + source_args(p)
        if sub == "pack":
            if not p["output"]:
                module.fail_json(msg="template pack needs output")
            return ["template", "pack"] + ([p["template"]] if p["template"] else []) + ["--output", p["output"]]
        if sub == "show":
            return ["template", "show"] + ([p["template"]] if p["template"] else [])
        module.fail_json(msg="template needs subcommand build, pack or show")
    module.fail_json(msg="unknown command %s" % cmd)


class Jailtx(object):
    """One host's jailtx: the program and the global options every run takes."""

    def __init__(self, module):
        self.module = module
        p = module.params
        program = p["program"]
        if "/" not in program:
            program = module.get_bin_path(program, required=True)
        self.base = [program, "--json"]
        for opt in ("root", "config", "backend"):
            if p[opt]:
                self.base += ["--" + opt, p[opt]]
        if p["auto_recover"]:
            self.base.append("--auto-recover")

    def run(self, args):
        """Runs jailtx; returns (rc, document or None, stdout, stderr, argv)."""
        argv = self.base + args
        rc, out, err = self.module.run_command(argv)
        doc = None
        if out.strip():
            try:
                doc = json.loads(out)
            except ValueError:
                doc = None
        return rc, doc, out, err, argv


def rooted(path):
    """A target's entry as the jail sees it (the report's paths are relative)."""
    path = path or "?"
    return path if path.startswith("/") else "/" + path


def etc_conflicts(doc):
    """The /etc entries that need the operator, from an etc_merge document."""
    found = []
    merge = (doc or {}).get("etc_merge") or {}
    for t in merge.get("targets") or []:
        name = t.get("target", "?")
        for c in t.get("conflicts") or []:
            found.append("%s:%s - %s" % (name, rooted(c.get("path")), c.get("why")))
        for r in t.get("refused") or []:
            found.append("%s:%s - refused: %s" % (name, rooted(r.get("path")), r.get("why")))
        for u in t.get("unresolved") or []:
            found.append("%s:%s - an earlier proposal is unresolved" % (name, rooted(u)))
    if merge.get("error"):
        found.append("/etc was not merged: %s" % merge["error"])
    return found


def audit_drift(doc):
    drift = []
    for a in (doc or {}).get("audit") or []:
        if not a.get("clean", True):
            report = a.get("report") or {}
            drift.append(
                {
                    "template": a.get("template"),
                    "path": a.get("path"),
                    "counts": a.get("counts"),
                    "differences": report.get("differences", report),
                }
            )
    return drift


def plan_changes(doc):
    plan = (doc or {}).get("plan") or {}
    if (doc or {}).get("pending"):
        return True
    return bool(plan.get("steps"))


def finish(module, result, rc, doc, out, err, argv):
    """Maps exit code and document to the module's exit."""
    result.update(exit_code=rc, cmd=argv, stderr=err)
    if doc is not None:
        result["json"] = doc
    else:
        result["stdout"] = out
    message = (doc or {}).get("error") or err.strip() or out.strip()
    if rc == 0:
        module.exit_json(**result)
    if rc == 7:
        result["changed"] = True
        result["conflicts"] = etc_conflicts(doc)
        for line in result["conflicts"] or ["/etc needs the operator (see json)"]:
            module.warn("/etc needs the operator: %s" % line)
        module.exit_json(**result)
    if rc == 3:
        result["drift"] = audit_drift(doc)
        names = ", ".join("%s (%s differences)" % (d["template"], len(d["differences"] or [])) for d in result["drift"])
        module.fail_json(msg="audit found drift: %s" % (names or message), **result)
    what = EXIT_WHAT.get(rc, "exit %s" % rc)
    module.fail_json(msg="jailtx %s: %s: %s" % (module.params["command"], what, message), **result)


def bundle_header_id(path):
    """The template id a bundle's header claims (see src/world/bundle.rs:
    magic, format u32 LE, header length u32 LE, header JSON), or None.
    Unverified: used only to find that a built template already is this
    bundle's, in which case nothing is installed."""
    try:
        with open(path, "rb") as f:
            fixed = f.read(16)
            if len(fixed) != 16 or fixed[:8] != b"JTXBNDL\0":
                return None
            size = int.from_bytes(fixed[12:16], "little")
            if size > 65536:
                return None
            return json.loads(f.read(size)).get("template_id")
    except (OSError, ValueError, AttributeError):
        return None


def current_template_id(jx):
    rc, doc, _, _, _ = jx.run(["template", "show"])
    if rc == 0 and doc:
        return doc.get("template_id")
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            command=dict(
                type="str",
                required=True,
                choices=["upgrade", "rollback", "recover", "audit", "status", "jail", "start", "stop", "restart", "etc-merge", "template"],
            ),
            subcommand=dict(type="str", choices=["build", "pack", "show", "create", "destroy"]),
            from_dir=dict(type="path"),
            from_tar=dict(type="path"),
            from_cmd=dict(type="str"),
            from_bundle=dict(type="path"),
            canary=dict(type="list", elements="str"),
            canary_wait=dict(type="int"),
            to=dict(type="str"),
            rollback=dict(type="bool", default=False),
            names=dict(type="list", elements="str", default=[]),
            hostname=dict(type="str"),
            ip=dict(type="str"),
            start=dict(type="bool", default=False),
            purge=dict(type="bool", default=False),
            templates=dict(type="list", elements="str", default=[]),
            all=dict(type="bool", default=False),
            quick=dict(type="bool", default=False),
            template=dict(type="str"),
            output=dict(type="path"),
            auto_recover=dict(type="bool", default=False),
            root=dict(type="path"),
            config=dict(type="path"),
            backend=dict(type="str"),
            program=dict(type="str", default="jailtx"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    args = command_args(module)
    jx = Jailtx(module)
    result = dict(changed=False)
    sub = p["subcommand"]
    mutating = p["command"] in MUTATING or (p["command"] == "template" and sub in ("build", "pack"))

    if p["command"] == "template" and sub == "show":
        rc, doc, out, err, argv = jx.run(args)
        if rc == 0 and doc:
            result["template_id"] = doc.get("template_id")
        finish(module, result, rc, doc, out, err, argv)

    if p["command"] == "template" and sub == "build" and p["from_bundle"] is not None:
        # A template exists already (jailtx would refuse to build another):
        # when it is the bundle's, there is nothing to do.
        have = current_template_id(jx)
        if have is not None and have == bundle_header_id(p["from_bundle"]):
            module.exit_json(changed=False, template_id=have, bundle_template_id=have)

    if p["command"] == "upgrade" and p["from_bundle"] is not None:
        # The dry run verifies the signature and reads the bundle's id
        # before anything is compared: an unverifiable bundle fails here,
        # also in check mode, and an id is never trusted unverified.
        rc, doc, out, err, argv = jx.run(["--dry-run"] + args)
        if rc == 4 and p["auto_recover"] and not module.check_mode:
            # A dry run never recovers; auto_recover asks for it, so the
            # interrupted transaction is finished first, as jailtx would.
            rc, doc, out, err, argv = jx.run(["recover"])
            if rc not in (0, 7):
                finish(module, result, rc, doc, out, err, argv)
            result.update(changed=True, recovered=doc)
            rc, doc, out, err, argv = jx.run(["--dry-run"] + args)
        if rc != 0:
            finish(module, result, rc, doc, out, err, argv)
        plan = (doc or {}).get("plan") or {}
        want = (plan.get("notes") or {}).get("bundle_template_id")
        have = current_template_id(jx)
        result.update(plan=plan, bundle_template_id=want, template_id=have)
        if want is not None and want == have:
            # Already on the bundle's template: nothing to do, nothing run.
            result.update(exit_code=0, cmd=argv, stderr=err, json=doc)
            module.exit_json(**result)
        if module.check_mode:
            result["changed"] = True
            finish(module, result, rc, doc, out, err, argv)

    if module.check_mode and mutating:
        rc, doc, out, err, argv = jx.run(["--dry-run"] + args)
        # 7: the plan is fine, the /etc merge that would follow it clashes
        # (a rollback's dry run shows that merge too).
        if rc in (0, 7):
            result["plan"] = (doc or {}).get("plan")
            result["changed"] = plan_changes(doc)
        finish(module, result, rc, doc, out, err, argv)

    rc, doc, out, err, argv = jx.run(args)
    if rc in (0, 7) and doc is not None and mutating:
        result["changed"] = bool(doc.get("changed", doc.get("recovered") is not None or "packed" in doc))
    if p["from_bundle"] is not None and rc in (0, 7):
        result["template_id"] = current_template_id(jx)
    finish(module, result, rc, doc, out, err, argv)


if __name__ == "__main__":
    main()
