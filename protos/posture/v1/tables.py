"""The catalogue of fact tables: osquery's table and column names, per platform.

This is part of the v1 contract between agent and collector, next to the ``.proto`` it
travels in: the agent fills these tables (whichever source it uses), the collector stores
them in typed columns, and policy SQL is validated against them. Names and columns follow
osquery's specs (``specs/**/*.table``, osquery 5.23) so Fleet's queries run unmodified;
tables osquery lacks keep osquery's naming style and are marked ``extension=True``
(``TableSchema.posture_extension``): ``file_lines``, ``windows_firewall_profiles``,
``windows_defender_status``, ``windows_local_group_members``, ``windows_device_join``,
``software_update``, ``software_update_available``, ``macos_screenlock_policy``,
``macos_firmware_password`` and ``mdm`` (named and shaped like Fleet's fleetd table of that
name, for the columns filled). ``docs/tables.md`` says which source fills each table on each
platform, and how enum numbers are decoded into these values.

Values travel as strings, as osquery returns them; ``type`` says how the collector types
them when storing (SQLite affinity: INTEGER, BIGINT and UNSIGNED_BIGINT become INTEGER).
An empty string means "not set / unknown", never "false": a check comparing it with a
number does not match, so an unknown setting fails rather than passes.

Path tables (``PATH_TABLES``) are gathered only for the paths the collection plan names:

- ``file``, ``hash``, ``file_lines``: filesystem paths, ``%`` LIKE wildcards allowed.
- ``registry``: registry paths in osquery's spelling with the full hive name, e.g.
  ``HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop``.
  Each plan entry names a key (osquery's ``key`` column), and the source returns every value
  directly under that key, one row each (``key``, ``path`` = key + ``\\`` + value name,
  ``name``, ``type``, ``data``, ``mtime``). An entry may also name one value
  (``...\\Desktop\\ScreenSaveTimeOut``, osquery's ``path`` column): the source then also
  returns that value's row, so checks may constrain either ``key`` or ``path``. ``%``
  matches any run of characters inside one key name (LIKE semantics, case-insensitive as
  the registry is); ``_`` is literal, because it is common in real key names. Missing keys
  and values give no rows (absence is a fact: a policy not set by Group Policy).

Keyed tables (``KEYED_TABLES``) are key-value tables a plan may narrow to the rows it names,
in the same ``paths`` field: ``system_controls`` by ``name`` (``kernel.randomize_va_space``).
``%`` matches any run of characters (dots included), ``_`` is literal and the match ignores
case, as for registry keys. A plan naming no rows asks for every row (what a collector
that predates row names sends), so the field only ever narrows a table, never empties it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "KEYED_TABLES",
    "PATH_TABLES",
    "TABLES",
    "VOLATILE_SYSCTLS",
    "Column",
    "TableSchema",
    "columns_for",
    "is_volatile_sysctl",
    "platform_tables",
]

ALL = frozenset({"linux", "darwin", "windows"})
POSIX = frozenset({"linux", "darwin"})
LINUX = frozenset({"linux"})
DARWIN = frozenset({"darwin"})
WINDOWS = frozenset({"windows"})

#: Tables that are only gathered for the paths a collection plan names (osquery requires a
#: ``path`` or ``key`` constraint for them too); see the module docstring for the semantics.
PATH_TABLES = frozenset({"file", "hash", "file_lines", "registry"})

#: Key-value tables a plan may narrow to named rows: table -> the column its names match
#: (see the module docstring). An agent reads ten kernel parameters, not 1,300.
KEYED_TABLES: dict[str, str] = {"system_controls": "name"}

#: Kernel tunables (``system_controls.name`` prefixes) that are counters or change on every
#: read: state, not settings. Agents leave them out, whichever source read the table: any one
#: of them would make ``system_controls`` differ at every collection and resend ~1,300 rows
#: that no policy or drift view can use (measured: five of them change within seconds on an
#: idle machine; boot_id changes at every boot).
VOLATILE_SYSCTLS = (
    "fs.aio-nr",
    "fs.dentry-state",
    "fs.file-nr",
    "fs.inode-nr",
    "fs.inode-state",
    "fs.quota.",
    "kernel.ns_last_pid",
    "kernel.pty.nr",
    "kernel.random.boot_id",
    "kernel.random.entropy_avail",
    "kernel.random.uuid",
    "net.netfilter.nf_conntrack_count",
)


def is_volatile_sysctl(name: str) -> bool:
    return name.startswith(VOLATILE_SYSCTLS)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    #: Platforms where osquery fills this column; empty means every platform of the table.
    platforms: frozenset[str] = frozenset()

    @property
    def sql_type(self) -> str:
        return "REAL" if self.type == "DOUBLE" else "TEXT" if self.type == "TEXT" else "INTEGER"


@dataclass(frozen=True)
class TableSchema:
    name: str
    platforms: frozenset[str]
    description: str
    columns: tuple[Column, ...]
    #: True for tables osquery does not ship (documented as Posture additions).
    posture_extension: bool = False

    def column_names(self, platform: str | None = None) -> tuple[str, ...]:
        """Columns osquery fills on ``platform`` (all columns when ``platform`` is None)."""
        return tuple(
            column.name
            for column in self.columns
            if platform is None or not column.platforms or platform in column.platforms
        )


def _parse_columns(spec: str) -> tuple[Column, ...]:
    """Parse ``"name TYPE; other TYPE [darwin windows]"`` into columns."""
    columns = []
    for part in spec.split(";"):
        words, _, platforms = part.strip().partition("[")
        name, column_type = words.split()
        columns.append(Column(name, column_type, frozenset(platforms.rstrip("]").split())))
    return tuple(columns)


def _table(
    name: str, platforms: frozenset[str], description: str, columns: str, *, extension: bool = False
) -> TableSchema:
    return TableSchema(name, platforms, description, _parse_columns(columns), extension)


_CATALOGUE: Iterable[TableSchema] = (
    _table(
        "os_version",
        ALL,
        "A single row containing the operating system name and version.",
        "name TEXT; version TEXT; major INTEGER; minor INTEGER; patch INTEGER; build TEXT; "
        "platform TEXT; platform_like TEXT; codename TEXT; arch TEXT; extra TEXT [darwin]; "
        "install_date BIGINT [windows]; revision INTEGER [windows]",
    ),
    _table(
        "system_info",
        ALL,
        "System information for identification.",
        "hostname TEXT; uuid TEXT; cpu_type TEXT; cpu_subtype TEXT; cpu_brand TEXT; "
        "cpu_physical_cores INTEGER; cpu_logical_cores INTEGER; cpu_sockets INTEGER; "
        "cpu_microcode TEXT; physical_memory BIGINT; hardware_vendor TEXT; hardware_model "
        "TEXT; hardware_version TEXT; hardware_serial TEXT; board_vendor TEXT; board_model "
        "TEXT; board_version TEXT; board_serial TEXT; computer_name TEXT; local_hostname "
        "TEXT; emulated_cpu_type TEXT [windows]",
    ),
    _table(
        "kernel_info",
        ALL,
        "Basic active kernel information.",
        "version TEXT; arguments TEXT; path TEXT; device TEXT",
    ),
    _table(
        "uptime",
        ALL,
        "Track time passed since last boot. Some systems track this as calendar time, some as runtime.",
        "days INTEGER; hours INTEGER; minutes INTEGER; seconds INTEGER; total_seconds BIGINT",
    ),
    _table(
        "users",
        ALL,
        "Local user accounts (including domain accounts that have logged on locally (Windows)).",
        "uid BIGINT; gid BIGINT; uid_signed BIGINT; gid_signed BIGINT; username TEXT; "
        "description TEXT; directory TEXT; shell TEXT; uuid TEXT; type TEXT [windows]; "
        "is_hidden INTEGER [darwin]",
    ),
    _table(
        "groups",
        ALL,
        "Local system groups.",
        "gid BIGINT; gid_signed BIGINT; groupname TEXT; group_sid TEXT [windows]; comment "
        "TEXT [windows]; is_hidden INTEGER [darwin]",
    ),
    _table(
        "user_groups",
        ALL,
        "Local system user group relationships.",
        "uid BIGINT; gid BIGINT",
    ),
    _table(
        "shadow",
        LINUX,
        "Local system users encrypted passwords and related information.",
        "password_status TEXT; hash_alg TEXT; last_change BIGINT; min BIGINT; max BIGINT; "
        "warning BIGINT; inactive BIGINT; expire BIGINT; flag BIGINT; username TEXT",
    ),
    _table(
        "sudoers",
        POSIX,
        "Rules for running commands as other users via sudo.",
        "source TEXT; header TEXT; rule_details TEXT",
    ),
    _table(
        "authorized_keys",
        POSIX,
        "A line-delimited authorized_keys table.",
        "uid BIGINT; algorithm TEXT; key TEXT; options TEXT; comment TEXT; key_file TEXT",
    ),
    _table(
        "user_ssh_keys",
        ALL,
        "Returns the private keys in the users ~/.ssh directory and whether or not they are encrypted.",
        "uid BIGINT; path TEXT; encrypted INTEGER; key_type TEXT; key_group_name TEXT; "
        "key_length INTEGER; key_security_bits INTEGER",
    ),
    _table(
        "ssh_configs",
        ALL,
        "A table of parsed ssh_configs.",
        "uid BIGINT; block TEXT; option TEXT; ssh_config_file TEXT",
    ),
    _table(
        "augeas",
        POSIX,
        "Configuration files parsed by augeas.",
        "node TEXT; value TEXT; label TEXT; path TEXT",
    ),
    _table(
        "processes",
        ALL,
        "All running processes on the host system.",
        "pid BIGINT; name TEXT; path TEXT; cmdline TEXT; state TEXT; cwd TEXT; root TEXT; uid "
        "BIGINT; gid BIGINT; euid BIGINT; egid BIGINT; suid BIGINT; sgid BIGINT; on_disk "
        "INTEGER; wired_size BIGINT; resident_size BIGINT; total_size BIGINT; user_time "
        "BIGINT; system_time BIGINT; disk_bytes_read BIGINT; disk_bytes_written BIGINT; "
        "start_time BIGINT; parent BIGINT; pgroup BIGINT; threads INTEGER; nice INTEGER; "
        "elevated_token INTEGER [windows]; secure_process INTEGER [windows]; protection_type "
        "TEXT [windows]; virtual_process INTEGER [windows]; elapsed_time BIGINT [windows]; "
        "handle_count BIGINT [windows]; percent_processor_time BIGINT [windows]; upid BIGINT "
        "[darwin]; uppid BIGINT [darwin]; cpu_type INTEGER [darwin]; cpu_subtype INTEGER "
        "[darwin]; translated INTEGER [darwin]; cgroup_path TEXT [linux]",
    ),
    _table(
        "listening_ports",
        ALL,
        "Processes with listening (bound) network sockets/ports.",
        "pid INTEGER; port INTEGER; protocol INTEGER; family INTEGER; address TEXT; fd "
        "BIGINT; socket BIGINT; path TEXT; net_namespace TEXT [linux]",
    ),
    _table(
        "process_open_sockets",
        ALL,
        "Processes which have open network sockets on the system.",
        "pid INTEGER; fd BIGINT; socket BIGINT; family INTEGER; protocol INTEGER; "
        "local_address TEXT; remote_address TEXT; local_port INTEGER; remote_port INTEGER; "
        "path TEXT; state TEXT; net_namespace TEXT [linux]",
    ),
    _table(
        "interface_addresses",
        ALL,
        "Network interfaces and relevant metadata.",
        "interface TEXT; address TEXT; mask TEXT; broadcast TEXT; point_to_point TEXT; type "
        "TEXT; friendly_name TEXT [windows]",
    ),
    _table(
        "logged_in_users",
        ALL,
        "Users with an active shell on the system.",
        "type TEXT; user TEXT; tty TEXT; host TEXT; time BIGINT; pid INTEGER; sid TEXT "
        "[windows]; registry_hive TEXT [windows]",
    ),
    _table(
        "last",
        POSIX,
        "System logins and logouts.",
        "username TEXT; tty TEXT; pid INTEGER; type INTEGER; type_name TEXT; time INTEGER; "
        "host TEXT",
    ),
    _table(
        "deb_packages",
        LINUX,
        "The installed DEB package database.",
        "name TEXT; version TEXT; source TEXT; size BIGINT; arch TEXT; revision TEXT; status "
        "TEXT; maintainer TEXT; section TEXT; priority TEXT; admindir TEXT",
    ),
    _table(
        "rpm_packages",
        LINUX,
        "RPM packages that are currently installed on the host system.",
        "name TEXT; version TEXT; release TEXT; source TEXT; size BIGINT; sha1 TEXT; arch "
        "TEXT; epoch INTEGER; install_time INTEGER; vendor TEXT; package_group TEXT",
    ),
    _table(
        "apt_sources",
        LINUX,
        "Current list of APT repositories or software channels.",
        "name TEXT; source TEXT; base_uri TEXT; release TEXT; version TEXT; maintainer TEXT; "
        "components TEXT; architectures TEXT",
    ),
    _table(
        "yum_sources",
        LINUX,
        "Current list of Yum repositories or software channels.",
        "name TEXT; source TEXT; baseurl TEXT; mirrorlist TEXT; metalink TEXT; enabled TEXT; "
        "gpgcheck TEXT; gpgkey TEXT",
    ),
    _table(
        "kernel_modules",
        LINUX,
        "Linux kernel modules both loaded and within the load search path.",
        "name TEXT; size BIGINT; used_by TEXT; status TEXT; address TEXT",
    ),
    _table(
        "system_controls",
        POSIX,
        "sysctl names, values, and settings information.",
        "name TEXT; oid TEXT; subsystem TEXT; current_value TEXT; config_value TEXT; type "
        "TEXT; field_name TEXT [darwin]",
    ),
    _table(
        "mounts",
        POSIX,
        "System mounted devices and filesystems (not process specific).",
        "device TEXT; device_alias TEXT; path TEXT; type TEXT; blocks_size BIGINT; blocks "
        "BIGINT; blocks_free BIGINT; blocks_available BIGINT; inodes BIGINT; inodes_free "
        "BIGINT; flags TEXT",
    ),
    _table(
        "disk_encryption",
        POSIX,
        "Disk encryption status and information.",
        "name TEXT; uuid TEXT; encrypted INTEGER; type TEXT; encryption_status TEXT; uid TEXT "
        "[darwin]; user_uuid TEXT [darwin]; filevault_status TEXT [darwin]",
    ),
    _table(
        "iptables",
        LINUX,
        "Linux IP packet filtering and NAT tool.",
        "filter_name TEXT; chain TEXT; policy TEXT; target TEXT; protocol INTEGER; src_port "
        "TEXT; dst_port TEXT; src_ip TEXT; src_mask TEXT; iniface TEXT; iniface_mask TEXT; "
        "dst_ip TEXT; dst_mask TEXT; outiface TEXT; outiface_mask TEXT; match TEXT; packets "
        "INTEGER; bytes INTEGER",
    ),
    _table(
        "selinux_settings",
        LINUX,
        "Track active SELinux settings.",
        "scope TEXT; key TEXT; value TEXT",
    ),
    _table(
        "apparmor_profiles",
        LINUX,
        "Track active AppArmor profiles.",
        "path TEXT; name TEXT; attach TEXT; mode TEXT; sha1 TEXT; sha256 TEXT",
    ),
    _table(
        "secureboot",
        ALL,
        "Secure Boot UEFI Settings.",
        "secure_boot INTEGER; secure_mode INTEGER [darwin]; description TEXT [darwin]; "
        "kernel_extensions INTEGER [darwin]; mdm_operations INTEGER [darwin]; setup_mode "
        "INTEGER [linux windows]",
    ),
    _table(
        "crontab",
        POSIX,
        "Line parsed values from system and user cron/tab.",
        "event TEXT; minute TEXT; hour TEXT; day_of_month TEXT; month TEXT; day_of_week TEXT; "
        "command TEXT; path TEXT",
    ),
    _table(
        "systemd_units",
        LINUX,
        "Track systemd units.",
        "id TEXT; description TEXT; load_state TEXT; active_state TEXT; sub_state TEXT; "
        "unit_file_state TEXT; following TEXT; object_path TEXT; job_id BIGINT; job_type "
        "TEXT; job_path TEXT; fragment_path TEXT; user TEXT; source_path TEXT",
    ),
    _table(
        "startup_items",
        ALL,
        "Applications and binaries set as startup items.",
        "name TEXT; path TEXT; args TEXT; type TEXT; source TEXT; status TEXT; username TEXT",
    ),
    _table(
        "suid_bin",
        POSIX,
        "suid binaries in common locations.",
        "path TEXT; username TEXT; groupname TEXT; permissions TEXT",
    ),
    _table(
        "file",
        ALL,
        "Interactive filesystem attributes and metadata.",
        "path TEXT; directory TEXT; filename TEXT; inode BIGINT; uid BIGINT; gid BIGINT; mode "
        "TEXT; device BIGINT; size BIGINT; block_size INTEGER; atime BIGINT; mtime BIGINT; "
        "ctime BIGINT; btime BIGINT; hard_links INTEGER; symlink INTEGER; type TEXT; "
        "symlink_target_path TEXT; attributes TEXT [windows]; volume_serial TEXT [windows]; "
        "file_id TEXT [windows]; file_version TEXT [windows]; product_version TEXT [windows]; "
        "original_filename TEXT [windows]; shortcut_target_path TEXT [windows]; "
        "shortcut_target_type TEXT [windows]; shortcut_target_location TEXT [windows]; "
        "shortcut_start_in TEXT [windows]; shortcut_run TEXT [windows]; shortcut_comment TEXT "
        "[windows]; bsd_flags TEXT [darwin]",
    ),
    _table(
        "hash",
        ALL,
        "Filesystem hash data.",
        "path TEXT; directory TEXT; md5 TEXT; sha1 TEXT; sha256 TEXT",
    ),
    _table(
        "dns_resolvers",
        POSIX,
        "Resolvers used by this host. Note: On Windows this data is available in the interface_details table.",
        "id INTEGER; type TEXT; address TEXT; netmask TEXT; options BIGINT",
    ),
    _table(
        "windows_security_center",
        WINDOWS,
        "The health status of Window Security features. Health values can be Good, Poor, Snoozed or Not Monitored.",
        "firewall TEXT; autoupdate TEXT; antivirus TEXT; internet_settings TEXT; "
        "windows_security_center_service TEXT; user_account_control TEXT",
    ),
    _table(
        "windows_security_products",
        WINDOWS,
        "Enumeration of registered Windows security products. Note: Not compatible with Windows Server.",
        "type TEXT; name TEXT; state TEXT; state_timestamp TEXT; remediation_path TEXT; "
        "signatures_up_to_date INTEGER",
    ),
    _table(
        "bitlocker_info",
        WINDOWS,
        "Retrieve bitlocker status of the machine.",
        "device_id TEXT; drive_letter TEXT; persistent_volume_id TEXT; conversion_status "
        "INTEGER; protection_status INTEGER; encryption_method TEXT; protector_types TEXT; "
        "version INTEGER; percentage_encrypted INTEGER; lock_status INTEGER",
    ),
    _table(
        "windows_firewall_rules",
        WINDOWS,
        "Provides the list of Windows firewall rules.",
        "name TEXT; app_name TEXT; action TEXT; enabled INTEGER; grouping TEXT; direction "
        "TEXT; protocol TEXT; local_addresses TEXT; remote_addresses TEXT; local_ports TEXT; "
        "remote_ports TEXT; icmp_types_codes TEXT; profile_domain INTEGER; profile_private "
        "INTEGER; profile_public INTEGER; service_name TEXT",
    ),
    _table(
        "windows_optional_features",
        WINDOWS,
        "Lists names and installation states of windows features. Maps to Win32_OptionalFeature WMI class.",
        "name TEXT; caption TEXT; state INTEGER; statename TEXT",
    ),
    _table(
        "patches",
        WINDOWS,
        "Lists all the patches applied.",
        "csname TEXT; hotfix_id TEXT; caption TEXT; description TEXT; fix_comments TEXT; "
        "installed_by TEXT; install_date TEXT; installed_on TEXT",
    ),
    _table(
        "windows_update_history",
        WINDOWS,
        "Provides the history of the windows update events.",
        "client_app_id TEXT; date BIGINT; description TEXT; hresult BIGINT; operation TEXT; "
        "result_code TEXT; server_selection TEXT; service_id TEXT; support_url TEXT; title "
        "TEXT; update_id TEXT; update_revision BIGINT",
    ),
    _table(
        "security_profile_info",
        WINDOWS,
        "Information on the security profile of a given system by listing the system Account and Audit Policies.",
        "minimum_password_age INTEGER; maximum_password_age INTEGER; minimum_password_length "
        "INTEGER; password_complexity INTEGER; password_history_size INTEGER; "
        "lockout_bad_count INTEGER; logon_to_change_password INTEGER; "
        "force_logoff_when_expire INTEGER; new_administrator_name TEXT; new_guest_name TEXT; "
        "clear_text_password INTEGER; lsa_anonymous_name_lookup INTEGER; enable_admin_account "
        "INTEGER; enable_guest_account INTEGER; audit_system_events INTEGER; "
        "audit_logon_events INTEGER; audit_object_access INTEGER; audit_privilege_use "
        "INTEGER; audit_policy_change INTEGER; audit_account_manage INTEGER; "
        "audit_process_tracking INTEGER; audit_ds_access INTEGER; audit_account_logon INTEGER",
    ),
    _table(
        "registry",
        WINDOWS,
        "All of the Windows registry hives.",
        "key TEXT; path TEXT; name TEXT; type TEXT; data TEXT; mtime BIGINT",
    ),
    _table(
        "services",
        WINDOWS,
        "Lists all installed Windows services and their relevant data.",
        "name TEXT; service_type TEXT; display_name TEXT; status TEXT; pid INTEGER; "
        "start_type TEXT; win32_exit_code INTEGER; service_exit_code INTEGER; path TEXT; "
        "module_path TEXT; description TEXT; user_account TEXT",
    ),
    _table(
        "tpm_info",
        WINDOWS,
        "A table that lists the TPM related information.",
        "activated INTEGER; enabled INTEGER; owned INTEGER; manufacturer_version TEXT; "
        "manufacturer_id INTEGER; manufacturer_name TEXT; product_name TEXT; "
        "physical_presence_version TEXT; spec_version TEXT",
    ),
    _table(
        "programs",
        WINDOWS,
        "Represents products as they are installed by Windows Installer.",
        "name TEXT; version TEXT; install_location TEXT; install_source TEXT; language TEXT; "
        "publisher TEXT; uninstall_string TEXT; install_date TEXT; identifying_number TEXT; "
        "package_family_name TEXT; upgrade_code TEXT",
    ),
    _table(
        "alf",
        DARWIN,
        "macOS application layer firewall (ALF) service details.",
        "allow_signed_enabled INTEGER; firewall_unload INTEGER; global_state INTEGER; "
        "logging_enabled INTEGER; logging_option INTEGER; stealth_enabled INTEGER; version "
        "TEXT",
    ),
    _table(
        "screenlock",
        DARWIN,
        "macOS screenlock status. Note: only fetches results for osquery's current logged-in user context.",
        "enabled INTEGER; grace_period INTEGER",
    ),
    _table(
        "sip_config",
        DARWIN,
        "Apple's System Integrity Protection (rootless) status.",
        "config_flag TEXT; enabled INTEGER; enabled_nvram INTEGER",
    ),
    _table(
        "gatekeeper",
        DARWIN,
        "macOS Gatekeeper Details.",
        "assessments_enabled INTEGER; dev_id_enabled INTEGER; version TEXT; opaque_version TEXT",
    ),
    _table(
        "managed_policies",
        DARWIN,
        "The managed configuration policies from AD, MDM, MCX, etc.",
        "domain TEXT; uuid TEXT; name TEXT; value TEXT; username TEXT; manual INTEGER",
    ),
    _table(
        "password_policy",
        DARWIN,
        "OpenDirectory account policies for macOS including password content, authentication, and password change polic.",
        "uid BIGINT; policy_identifier TEXT; policy_content TEXT; policy_description TEXT; "
        "policy_category TEXT; policy_parameters TEXT",
    ),
    _table(
        "plist",
        DARWIN,
        "Read and parse a plist file.",
        "key TEXT; subkey TEXT; value TEXT; path TEXT",
    ),
    _table(
        "apps",
        DARWIN,
        "macOS applications installed in known search paths (e.g., /Applications).",
        "name TEXT; path TEXT; bundle_executable TEXT; bundle_identifier TEXT; bundle_name "
        "TEXT; bundle_short_version TEXT; bundle_version TEXT; bundle_package_type TEXT; "
        "environment TEXT; element TEXT; compiler TEXT; development_region TEXT; display_name "
        "TEXT; info_string TEXT; minimum_system_version TEXT; category TEXT; "
        "applescript_enabled TEXT; copyright TEXT; last_opened_time DOUBLE",
    ),
    _table(
        "windows_firewall_profiles",
        WINDOWS,
        "Windows Defender Firewall profiles (Domain, Private, Public) as in force, from "
        "Get-NetFirewallProfile -PolicyStore ActiveStore (local settings merged with Group "
        "Policy). Booleans are 1/0, empty when NotConfigured; actions are Allow, Block or "
        "NotConfigured (Posture's table: osquery has only windows_firewall_rules).",
        "profile_name TEXT; enabled INTEGER; default_inbound_action TEXT; "
        "default_outbound_action TEXT; allow_inbound_rules INTEGER; allow_local_firewall_rules "
        "INTEGER; allow_local_ipsec_rules INTEGER; allow_user_apps INTEGER; allow_user_ports "
        "INTEGER; allow_unicast_response_to_multicast INTEGER; notify_on_listen INTEGER; "
        "enable_stealth_mode_for_ipsec INTEGER; log_allowed INTEGER; log_blocked INTEGER; "
        "log_ignored INTEGER; log_file_name TEXT; log_max_size_kilobytes INTEGER",
        extension=True,
    ),
    _table(
        "windows_defender_status",
        WINDOWS,
        "Microsoft Defender Antivirus status from Get-MpComputerStatus: engines on or off and "
        "signature age, which windows_security_products cannot carry (Posture's table). "
        "Booleans are 1/0; ages are whole days, empty when never (4294967295); "
        "signature_last_updated is a Unix time (UTC).",
        "antivirus_enabled INTEGER; antispyware_enabled INTEGER; real_time_protection_enabled "
        "INTEGER; behavior_monitor_enabled INTEGER; ioav_protection_enabled INTEGER; "
        "on_access_protection_enabled INTEGER; am_service_enabled INTEGER; tamper_protected "
        "INTEGER; am_running_mode TEXT; am_product_version TEXT; am_engine_version TEXT; "
        "signature_version TEXT; signature_age_days INTEGER; signature_last_updated BIGINT; "
        "signatures_out_of_date INTEGER; quick_scan_age_days INTEGER; full_scan_age_days "
        "INTEGER",
        extension=True,
    ),
    _table(
        "windows_local_group_members",
        WINDOWS,
        "Every member of every local group, local or not: domain and Microsoft Entra "
        "accounts and groups, and SIDs that no longer resolve (user_groups, as in osquery, "
        "lists local users only). member_type is User or Group; local is 1 for this "
        "computer's own accounts (Posture's table).",
        "groupname TEXT; group_sid TEXT; member_name TEXT; member_sid TEXT; member_type TEXT; "
        "local INTEGER",
        extension=True,
    ),
    _table(
        "windows_device_join",
        WINDOWS,
        "How the device is joined to a directory, from dsregcmd /status: Microsoft Entra "
        "(Azure AD), enterprise (on-premises DRS) or Active Directory domain; 1/0 "
        "(Posture's table).",
        "azure_ad_joined INTEGER; enterprise_joined INTEGER; domain_joined INTEGER; "
        "workplace_joined INTEGER; device_name TEXT; tenant_name TEXT; domain_name TEXT",
        extension=True,
    ),
    _table(
        "software_update",
        DARWIN,
        "macOS Software Update settings in force (one row): the com.apple.SoftwareUpdate "
        "preferences, a managed (MDM profile) value winning over the local one. 1/0, empty "
        "when neither sets the key (macOS then applies its own default); managed is 1 when "
        "any value came from a profile (Posture's table).",
        "automatic_check_enabled INTEGER; automatic_download INTEGER; "
        "automatically_install_macos_updates INTEGER; automatically_install_app_updates "
        "INTEGER; critical_update_install INTEGER; config_data_install INTEGER; "
        "last_successful_check BIGINT; managed INTEGER",
        extension=True,
    ),
    _table(
        "software_update_available",
        DARWIN,
        "Updates macOS knows are pending, from softwareupdate --list --no-scan (the last "
        "scan's results; no network). No rows means none pending (Posture's table).",
        "label TEXT; title TEXT; version TEXT; size TEXT; recommended INTEGER; action TEXT; "
        "restart_required INTEGER",
        extension=True,
    ),
    _table(
        "macos_screenlock_policy",
        DARWIN,
        "Screen saver and screen lock settings readable as root (osquery's screenlock only "
        "sees its own user's session): one row per scope that sets them. scope is computer "
        "(a device MDM profile), user (a user MDM profile) or user_setting (the user's own "
        "ByHost preference); idle_time and ask_for_password_delay are seconds (Posture's "
        "table).",
        "scope TEXT; username TEXT; idle_time INTEGER; ask_for_password INTEGER; "
        "ask_for_password_delay INTEGER; source_path TEXT",
        extension=True,
    ),
    _table(
        "macos_firmware_password",
        DARWIN,
        "Whether an Intel Mac has a firmware password, from firmwarepasswd -check (Apple "
        "silicon Macs have none and give no row) (Posture's table).",
        "password_enabled INTEGER",
        extension=True,
    ),
    _table(
        "mdm",
        DARWIN,
        "MDM enrollment of this Mac from profiles status -type enrollment; named and shaped "
        "like Fleet's fleetd table, for the columns filled here. 1/0, empty when this macOS "
        "does not say (Posture's table).",
        "enrolled INTEGER; server_url TEXT; installed_from_dep INTEGER; user_approved INTEGER",
        extension=True,
    ),
    _table(
        "file_lines",
        ALL,
        "Lines of the text files a collection plan names (Posture's table; Fleet's CIS policies "
        "read the same table from the macadmins extension).",
        "path TEXT; line TEXT",
        extension=True,
    ),
)

TABLES: dict[str, TableSchema] = {table.name: table for table in _CATALOGUE}


def platform_tables(platform: str) -> list[TableSchema]:
    """The tables osquery defines for ``platform`` ("linux", "darwin" or "windows")."""
    return [table for table in TABLES.values() if platform in table.platforms]


def columns_for(table: str, platform: str) -> tuple[str, ...]:
    """The columns a source must fill for ``table`` on ``platform`` (KeyError if unknown)."""
    return TABLES[table].column_names(platform)
