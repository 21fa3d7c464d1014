"""RBAC with Cyborg's rule names, the new defaults of the policy-defaults-refresh specs (ussuri,
victoria), and the legacy rules they replace; overridable by an operator's policy file.

oslo.policy is used for the check-string language so that operators' existing policy files
(YAML/JSON, `role:admin or project_id:%(project_id)s`, ...) work unchanged, and for its deprecation
workflow: with `enforce_new_defaults` off (the default, as upstream ships) each new default is ORed
with the legacy rule it replaced, so nothing a deployment allowed before is refused.

The new defaults follow the specs' personas: system admin (`role:admin` on a system-scoped token)
for device-profile writes, device enable/disable and attribute writes; system reader for device,
deployable and attribute reads (upstream 17's project manager keeps those reads); project reader for
profile and ARQ reads; project member (or a service, as Nova) for ARQ writes; project or system admin
for programming. `enforce_scope` registers each rule's scope types, so that a token of the wrong
scope is refused before its check string is read (oslo.policy >= 4.5 has no option of its own for
this: a rule with scope types is always scope-checked, so they are registered only when it is on).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Hashable
from operator import attrgetter

from oslo_config import cfg
from oslo_policy import _checks, policy

from rayborg.api.context import RequestContext
from rayborg.api.errors import Forbidden

_DEPRECATED_SINCE = "W"
_REASON = "Default roles (reader/member/admin) and system/project scope replace the legacy rules."
SYSTEM, PROJECT = "system", "project"

BASE_RULES = [
    policy.RuleDefault("admin_api", "role:admin", "An admin, whatever the scope of its token (legacy)"),
    policy.RuleDefault("is_admin", "role:admin", "An admin, whatever the scope of its token (legacy)"),
    policy.RuleDefault("admin_or_owner", "rule:is_admin or project_id:%(project_id)s",
                       "An admin or the target's project; the target is the caller's own (legacy)"),
    policy.RuleDefault("system_admin_api", "role:admin and system_scope:all", "An admin of the system scope"),
    policy.RuleDefault("system_reader_api", "role:reader and system_scope:all",
                       "A reader (admins and members too) of the system scope"),
    policy.RuleDefault("project_reader_api", "role:reader and project_id:%(project_id)s",
                       "A reader (members and admins too) of the target's project"),
    policy.RuleDefault("project_member_api", "role:member and project_id:%(project_id)s",
                       "A member (admins too) of the target's project"),
    policy.RuleDefault("project_manager_api", "role:manager and project_id:%(project_id)s",
                       "A manager (admins too) of the target's project"),
    policy.RuleDefault("project_admin_api", "role:admin and project_id:%(project_id)s",
                       "An admin of the target's project"),
    policy.RuleDefault("service_api", "role:service", "A service user, such as Nova's"),
    policy.RuleDefault("project_reader_or_admin", "rule:project_reader_api or rule:admin_api",
                       "Upstream 17's default for reads"),
    policy.RuleDefault("project_member_or_admin", "rule:project_member_api or rule:admin_api",
                       "Upstream 17's former default for ARQ creation"),
    policy.RuleDefault("project_manager_or_admin", "rule:project_manager_api or rule:admin_api",
                       "Upstream 17's default for device, deployable and attribute reads"),
    policy.RuleDefault("project_member_or_service", "rule:project_member_api or rule:service_api",
                       "A project member or a service"),
    policy.RuleDefault("project_reader_or_service", "rule:project_reader_api or rule:service_api",
                       "A project reader or a service"),
    policy.RuleDefault("system_reader_or_project_manager",
                       "rule:system_reader_api or rule:project_manager_api",
                       "A system reader, or a project manager (upstream 17's reader of the device tree)"),
    policy.RuleDefault("system_or_project_admin", "rule:system_admin_api or rule:project_admin_api",
                       "A system admin or a project admin"),
]

_PROFILE_READ = "rule:project_reader_or_service or rule:system_reader_api"
_TREE_READ = "rule:system_reader_or_project_manager"
_SYSTEM_ADMIN = "rule:system_admin_api"
_BOTH = (SYSTEM, PROJECT)

# (rule name, new default, legacy rule ORed in while enforce_new_defaults is off, scope types, description)
API_RULES: list[tuple[str, str, str, tuple[str, ...], str]] = [
    ("cyborg:device_profile:get_all", _PROFILE_READ, "rule:admin_or_owner", _BOTH, "List device profiles"),
    ("cyborg:device_profile:get_one", _PROFILE_READ, "rule:admin_or_owner", _BOTH, "Show a device profile"),
    ("cyborg:device_profile:create", _SYSTEM_ADMIN, "rule:is_admin", (SYSTEM,), "Create a device profile"),
    ("cyborg:device_profile:delete", _SYSTEM_ADMIN, "rule:is_admin", (SYSTEM,), "Delete device profiles"),
    ("cyborg:arq:get_all", "rule:project_reader_or_service", "rule:admin_or_owner", (PROJECT,),
     "List accelerator requests"),
    ("cyborg:arq:get_one", "rule:project_reader_or_service", "rule:admin_or_owner", (PROJECT,),
     "Show an accelerator request"),
    ("cyborg:arq:create", "rule:project_member_or_service", "rule:project_member_or_admin", (PROJECT,),
     "Create accelerator requests"),
    ("cyborg:arq:update", "rule:project_member_or_service", "rule:admin_or_owner", (PROJECT,),
     "Bind or unbind accelerator requests (also needs a service token)"),
    ("cyborg:arq:delete", "rule:project_member_or_service", "rule:admin_or_owner", (PROJECT,),
     "Delete accelerator requests"),
    ("cyborg:device:get_all", _TREE_READ, "rule:admin_api", _BOTH, "List devices"),
    ("cyborg:device:get_one", _TREE_READ, "rule:admin_api", _BOTH, "Show a device"),
    ("cyborg:device:disable", _SYSTEM_ADMIN, "rule:is_admin", (SYSTEM,), "Disable a device"),
    ("cyborg:device:enable", _SYSTEM_ADMIN, "rule:is_admin", (SYSTEM,), "Enable a device"),
    ("cyborg:deployable:get_all", _TREE_READ, "rule:admin_api", _BOTH, "List deployables"),
    ("cyborg:deployable:get_one", _TREE_READ, "rule:admin_api", _BOTH, "Show a deployable"),
    ("cyborg:deployable:program", "rule:system_or_project_admin", "rule:is_admin", _BOTH,
     "Program a bitstream onto a deployable"),
    ("cyborg:attribute:get_all", _TREE_READ, "rule:admin_api", _BOTH, "List attributes"),
    ("cyborg:attribute:get_one", _TREE_READ, "rule:admin_api", _BOTH, "Show an attribute"),
    ("cyborg:attribute:create", _SYSTEM_ADMIN, "rule:is_admin", (SYSTEM,), "Create an attribute"),
    ("cyborg:attribute:update", _SYSTEM_ADMIN, "rule:is_admin", (SYSTEM,),
     "Update an attribute's value (rayborg; the 2023.1 attribute API's PUT)"),
    ("cyborg:attribute:delete", _SYSTEM_ADMIN, "rule:is_admin", (SYSTEM,), "Delete an attribute"),
    ("cyborg:quota:get", "rule:project_reader_or_service or rule:system_reader_api", "rule:admin_or_owner", _BOTH,
     "Show quota usage and limits (another project's: admins only)"),
]


def rule_defaults(scoped: bool = True) -> list[policy.RuleDefault]:
    """Every rule with its default; the API rules with their deprecated (legacy) rule, and their scope
    types when `scoped`."""
    rules = list(BASE_RULES)
    for name, check, legacy, scopes, description in API_RULES:
        deprecated = policy.DeprecatedRule(name=name, check_str=legacy, deprecated_reason=_REASON,
                                           deprecated_since=_DEPRECATED_SINCE)
        rules.append(policy.RuleDefault(name, check, description=description, deprecated_rule=deprecated,
                                        scope_types=list(scopes) if scoped else None))
    return rules


# What a check string can read of the caller: oslo.policy credential keys -> RequestContext fields
# (`policy_creds`), and the target's keys (`policy_target`, always the caller's own ids).
_CRED_FIELDS = {"user_id": "user_id", "project_id": "project_id", "roles": "roles", "is_admin": "roles",
                "service_roles": "service_roles", "system_scope": "system_scope", "system": "system_scope"}
_TARGET_FIELDS = {"project_id": "project_id", "user_id": "user_id"}
_FIELD_ORDER = ("user_id", "project_id", "roles", "service_roles", "system_scope")
_TARGET_KEY = re.compile(r"%\((\w+)\)")


def _target_reads(match: str) -> set[str]:
    return {_TARGET_FIELDS[k] for k in _TARGET_KEY.findall(match) if k in _TARGET_FIELDS}


def _reads(check, rules, seen: frozenset[str] = frozenset()) -> set[str] | None:
    """The caller's fields whose values can change the answer of `check`; None when unknown (an
    external or plugin check): such a rule is never cached."""
    if isinstance(check, (_checks.TrueCheck, _checks.FalseCheck)):
        return set()
    if isinstance(check, (_checks.AndCheck, _checks.OrCheck)):
        parts = [_reads(c, rules, seen) for c in check.rules]
        return None if any(p is None for p in parts) else set().union(*parts)
    if isinstance(check, _checks.NotCheck):
        return _reads(check.rule, rules, seen)
    if isinstance(check, _checks.RuleCheck):
        if check.match in seen:
            return set()
        try:
            return _reads(rules[check.match], rules, seen | {check.match})
        except KeyError:  # no such rule: always False
            return set()
    if isinstance(check, _checks.RoleCheck):
        return {"roles"} | _target_reads(check.match)
    if type(check) is _checks.GenericCheck:
        kind, match = check.kind, check.match
        if match == f"%({kind})s" and kind in _TARGET_FIELDS:
            return set()  # `project_id:%(project_id)s` against the caller's own project: always True
        try:
            ast.literal_eval(kind)
            return _target_reads(match)  # `True:%(x)s`: the target only
        except (ValueError, SyntaxError):
            pass
        field = _CRED_FIELDS.get(kind.split(".")[0])
        return ({field} if field else set()) | _target_reads(match)
    return None


def _key_function(rule: str, fields: set[str] | None) -> Callable[[RequestContext], Hashable] | None:
    """Cache key of a rule's answer: the rule and the values of every field it reads (None: uncached)."""
    if fields is None:
        return None
    if not fields:
        return lambda ctx: rule
    getter = attrgetter(*[f for f in _FIELD_ORDER if f in fields])
    return lambda ctx: (rule, getter(ctx))


class PolicyEnforcer:
    """Wraps an oslo.policy Enforcer with rayborg's defaults and an optional operator file.

    The file is read once, at start (answers are cached on what each rule reads: a file changed
    later would disagree with them); restart to apply a change."""

    CACHE_SIZE = 4096

    def __init__(self, policy_file: str | None = None, enforce_new_defaults: bool = False,
                 enforce_scope: bool = False):
        conf = cfg.ConfigOpts()
        conf([], project="rayborg", default_config_files=[], default_config_dirs=[])
        self._enforcer = policy.Enforcer(conf, policy_file=policy_file, use_conf=False,
                                         overwrite=True, fallback_to_json_file=False)
        self._enforcer.conf.set_override("enforce_new_defaults", enforce_new_defaults, group="oslo_policy")
        self._enforcer.register_defaults(rule_defaults(scoped=enforce_scope))
        self._enforcer.suppress_deprecation_warnings = True
        self._enforcer.suppress_default_change_warnings = True
        self._enforcer.load_rules(force_reload=True)
        self._enforcer.use_conf = False  # no re-read of the file at later checks (see above)
        self._keys: dict[str, Callable[[RequestContext], Hashable] | None] = {}
        self._cache: dict[Hashable, bool] = {}

    def allowed(self, rule: str, ctx: RequestContext) -> bool:
        # An oslo.policy check costs ~100 us, a cached answer well under 1 us. An answer is reused
        # only for callers equal in every value the rule reads: with the defaults only the roles
        # (the target is the caller's own project), with `project_id:<id>` the project too.
        try:
            key_of = self._keys[rule]
        except KeyError:
            key_of = self._keys[rule] = _key_function(rule, self.reads(rule))
        if key_of is None:
            return self.check(rule, ctx)
        key = key_of(ctx)
        hit = self._cache.get(key)
        if hit is None:
            hit = self.check(rule, ctx)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def check(self, rule: str, ctx: RequestContext, target: dict | None = None) -> bool:
        """The answer of oslo.policy itself, uncached; against the caller's own project unless `target`
        names another (the API never does: isolation happens in the queries)."""
        target = ctx.policy_target() if target is None else target
        return bool(self._enforcer.enforce(rule, target, ctx.policy_creds(), do_raise=False))

    def reads(self, rule: str) -> set[str] | None:
        """The RequestContext fields the rule's answer depends on (None: unknown)."""
        rules = self._enforcer.rules
        if rule not in rules:
            return None
        fields = _reads(rules[rule], rules, frozenset({rule}))
        registered = self._enforcer.registered_rules.get(rule)
        if fields is not None and registered is not None and registered.scope_types:
            fields.add("system_scope")  # the token's scope is checked before the check string
        return fields

    def authorize(self, rule: str, ctx: RequestContext) -> None:
        if not self.allowed(rule, ctx):
            raise Forbidden(f"Access was denied to the following resource: {rule}")

    @staticmethod
    def rule_names() -> list[str]:
        return [name for name, *_ in API_RULES]
