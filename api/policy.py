"""RBAC with Cyborg's rule names and upstream defaults, overridable by an operator's policy file.

oslo.policy is used for the check-string language so that operators' existing policy files
(YAML/JSON, `role:admin or project_id:%(project_id)s`, ...) work unchanged. As upstream ships with
`enforce_new_defaults = False`, each new default is ORed with the legacy rule it replaced.
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
_REASON = "Default roles (reader/member/admin) and project scope replace the legacy rules."

BASE_RULES = [
    policy.RuleDefault("admin_api", "role:admin"),
    policy.RuleDefault("is_admin", "role:admin"),
    policy.RuleDefault("admin_or_owner", "rule:is_admin or project_id:%(project_id)s"),
    policy.RuleDefault("project_reader_api", "role:reader and project_id:%(project_id)s"),
    policy.RuleDefault("project_member_api", "role:member and project_id:%(project_id)s"),
    policy.RuleDefault("project_manager_api", "role:manager and project_id:%(project_id)s"),
    policy.RuleDefault("project_admin_api", "role:admin and project_id:%(project_id)s"),
    policy.RuleDefault("service_api", "role:service"),
    policy.RuleDefault("project_reader_or_admin", "rule:project_reader_api or rule:admin_api"),
    policy.RuleDefault("project_member_or_admin", "rule:project_member_api or rule:admin_api"),
    policy.RuleDefault("project_manager_or_admin", "rule:project_manager_api or rule:admin_api"),
    policy.RuleDefault("project_member_or_service", "rule:project_member_api or rule:service_api"),
]

# (rule name, new default, legacy rule ORed in or None, description)
API_RULES: list[tuple[str, str, str | None, str]] = [
    ("cyborg:device_profile:get_all", "rule:project_reader_or_admin", "rule:admin_or_owner",
     "List device profiles"),
    ("cyborg:device_profile:get_one", "rule:project_reader_or_admin", "rule:admin_or_owner",
     "Show a device profile"),
    ("cyborg:device_profile:create", "rule:admin_api", "rule:is_admin", "Create a device profile"),
    ("cyborg:device_profile:delete", "rule:admin_api", "rule:is_admin", "Delete device profiles"),
    ("cyborg:arq:get_all", "rule:project_reader_or_admin", "rule:admin_or_owner",
     "List accelerator requests"),
    ("cyborg:arq:get_one", "rule:project_reader_or_admin", "rule:admin_or_owner",
     "Show an accelerator request"),
    ("cyborg:arq:create", "rule:project_member_or_service", "rule:project_member_or_admin",
     "Create accelerator requests"),
    ("cyborg:arq:update", "rule:project_member_or_service", "rule:admin_or_owner",
     "Bind or unbind accelerator requests (also needs a service token)"),
    ("cyborg:arq:delete", "rule:project_member_or_service", "rule:admin_or_owner",
     "Delete accelerator requests"),
    ("cyborg:device:get_all", "rule:project_manager_or_admin", "rule:admin_api", "List devices"),
    ("cyborg:device:get_one", "rule:project_manager_or_admin", "rule:admin_api", "Show a device"),
    ("cyborg:device:disable", "rule:admin_api", None, "Disable a device"),
    ("cyborg:device:enable", "rule:admin_api", None, "Enable a device"),
    ("cyborg:deployable:get_all", "rule:project_manager_or_admin", "rule:admin_api", "List deployables"),
    ("cyborg:deployable:get_one", "rule:project_manager_or_admin", "rule:admin_api", "Show a deployable"),
    ("cyborg:deployable:program", "rule:admin_api", None, "Program a bitstream onto a deployable"),
    ("cyborg:attribute:get_all", "rule:project_manager_or_admin", "rule:admin_api", "List attributes"),
    ("cyborg:attribute:get_one", "rule:project_manager_or_admin", "rule:admin_api", "Show an attribute"),
    ("cyborg:attribute:create", "rule:admin_api", None, "Create an attribute"),
    ("cyborg:attribute:delete", "rule:admin_api", None, "Delete an attribute"),
]


def _rule_defaults() -> list[policy.RuleDefault]:
    rules = list(BASE_RULES)
    for name, check, legacy, description in API_RULES:
        deprecated = (policy.DeprecatedRule(name=name, check_str=legacy, deprecated_reason=_REASON,
                                            deprecated_since=_DEPRECATED_SINCE) if legacy else None)
        rules.append(policy.RuleDefault(name, check, description=description, deprecated_rule=deprecated,
                                        scope_types=["project"]))
    return rules


# What a check string can read of the caller: oslo.policy credential keys -> RequestContext fields
# (`policy_creds`), and the target's keys (`policy_target`, always the caller's own ids).
_CRED_FIELDS = {"user_id": "user_id", "project_id": "project_id", "roles": "roles", "is_admin": "roles",
                "service_roles": "service_roles"}
_TARGET_FIELDS = {"project_id": "project_id", "user_id": "user_id"}
_FIELD_ORDER = ("user_id", "project_id", "roles", "service_roles")
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

    def __init__(self, policy_file: str | None = None, enforce_new_defaults: bool = False):
        conf = cfg.ConfigOpts()
        conf([], project="rayborg", default_config_files=[], default_config_dirs=[])
        self._enforcer = policy.Enforcer(conf, policy_file=policy_file, use_conf=False,
                                         overwrite=True, fallback_to_json_file=False)
        self._enforcer.conf.set_override("enforce_new_defaults", enforce_new_defaults, group="oslo_policy")
        self._enforcer.register_defaults(_rule_defaults())
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

    def check(self, rule: str, ctx: RequestContext) -> bool:
        """The answer of oslo.policy itself, uncached."""
        return bool(self._enforcer.enforce(rule, ctx.policy_target(), ctx.policy_creds(), do_raise=False))

    def reads(self, rule: str) -> set[str] | None:
        """The RequestContext fields the rule's answer depends on (None: unknown)."""
        rules = self._enforcer.rules
        return _reads(rules[rule], rules, frozenset({rule})) if rule in rules else None

    def authorize(self, rule: str, ctx: RequestContext) -> None:
        if not self.allowed(rule, ctx):
            raise Forbidden(f"Access was denied to the following resource: {rule}")

    @staticmethod
    def rule_names() -> list[str]:
        return [name for name, *_ in API_RULES]
