"""RBAC with Cyborg's rule names and upstream defaults, overridable by an operator's policy file.

oslo.policy is used for the check-string language so that operators' existing policy files
(YAML/JSON, `role:admin or project_id:%(project_id)s`, ...) work unchanged. As upstream ships with
`enforce_new_defaults = False`, each new default is ORed with the legacy rule it replaced.
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_policy import policy

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


class PolicyEnforcer:
    """Wraps an oslo.policy Enforcer with rayborg's defaults and an optional operator file."""

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
        self._cache: dict[tuple, bool] = {}

    def allowed(self, rule: str, ctx: RequestContext) -> bool:
        # The target is always the caller's own project, so the answer depends only on the rule and
        # the caller's roles: cache it (an oslo.policy check costs ~150 us, a dict lookup ~0.1 us).
        key = (rule, ctx.roles, ctx.service_roles, ctx.project_id is None, ctx.user_id is None)
        hit = self._cache.get(key)
        if hit is None:
            hit = bool(self._enforcer.enforce(rule, ctx.policy_target(), ctx.policy_creds(), do_raise=False))
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def authorize(self, rule: str, ctx: RequestContext) -> None:
        if not self.allowed(rule, ctx):
            raise Forbidden(f"Access was denied to the following resource: {rule}")

    @staticmethod
    def rule_names() -> list[str]:
        return [name for name, *_ in API_RULES]
