"""The parameter table: every main.cf parameter postclient knows, as data.

Exports TABLE (the raw text) and SMTP_ONLY (smtp_* names that get no lmtp_*
mirror because LMTP has no such knob) and LMTP_RENAMES.  registry.py turns the
table into Parameter objects and adds the lmtp_* mirror of each smtp_*
parameter.

Columns, separated by "|":
  name | type | default | bounds | one-line description
type is one of bool, int, time:UNIT (UNIT = default unit of a bare number),
size, str, str(a/b/c), list, list(a/b/c), maps.  bounds is "MIN..MAX" with
either side optional, plus single extra values before a comma ("0,2..":
0 or >= 2).  A default of "@dynamic" is computed at run time
(host name, configuration directory, process name ...).

Defaults follow the Postfix 2.6 smtp(8) manual page, except: TLS defaults are
modern (TLS 1.2 and later, no RC4/EXPORT, sha256 fingerprints), syslog_name
and mail_name say postclient, queue and owner names are postclient's own, and
smtp_cname_overrides_servername is "no" so that names checked by TLS come from
MX records, not from CNAME targets.
"""

TABLE = r"""
# --- compatibility controls -------------------------------------------------
ignore_mx_lookup_error | bool | no | | Ignore DNS MX lookups that produce no response (look up A/AAAA instead)
smtp_always_send_ehlo | bool | yes | | Always send EHLO at the start of an SMTP session
smtp_never_send_ehlo | bool | no | | Never send EHLO at the start of an SMTP session
smtp_defer_if_no_mx_address_found | bool | no | | Defer rather than bounce when no MX host resolves to an address
smtp_line_length_limit | int | 990 | 0,2.. | Longest header or body line sent via SMTP before folding (0 = no limit)
smtp_pix_workaround_delay_time | time:s | 10s | 1s.. | Pause before sending "." to work around the PIX end-of-data bug
smtp_pix_workaround_threshold_time | time:s | 500s | 0.. | Queue age at which the PIX delay_dotcrlf workaround is applied
smtp_pix_workarounds | list(disable_esmtp/delay_dotcrlf) | disable_esmtp, delay_dotcrlf | | Workarounds applied to a server that looks like a PIX firewall
smtp_pix_workaround_maps | maps | | | Per-server-address PIX workaround lists, overriding smtp_pix_workarounds
smtp_quote_rfc821_envelope | bool | yes | | Quote envelope addresses in MAIL FROM and RCPT TO as RFC 821 requires
smtp_reply_filter | maps | | | Lookup tables that rewrite each reply line from a server
smtp_skip_4xx_greeting | bool | yes | | Skip servers that greet with a 4xx code (obsolete, always on)
smtp_skip_5xx_greeting | bool | yes | | Try the next server when one greets with a 5xx code
smtp_skip_quit_response | bool | yes | | Do not wait for the reply to QUIT
smtp_cname_overrides_servername | bool | no | | Use the CNAME target, not the MX name, as the server name in logs and TLS checks
smtp_discard_ehlo_keyword_address_maps | maps | | | Per-server-address lists of EHLO keywords to ignore
smtp_discard_ehlo_keywords | list | | | EHLO keywords to ignore (silent-discard suppresses the log line)
smtp_generic_maps | maps | | | Address rewriting applied to envelope and header addresses on output
smtp_mx_address_limit | int | 5 | 0.. | Maximal number of MX addresses tried per destination (0 = no limit)
smtp_mx_session_limit | int | 2 | 0.. | Maximal number of SMTP sessions per destination before giving up (0 = no limit)
smtp_send_xforward_command | bool | no | | Send XFORWARD with the original client attributes when announced
smtp_sasl_auth_soft_bounce | bool | yes | | Treat a failed SASL login as a temporary error
smtp_header_checks | maps | | | Restricted header checks applied to primary message headers on output
smtp_mime_header_checks | maps | | | Restricted header checks applied to MIME headers on output
smtp_nested_header_checks | maps | | | Restricted header checks applied to attached message headers on output
smtp_body_checks | maps | | | Restricted body checks applied on output
# --- MIME processing -------------------------------------------------------
disable_mime_output_conversion | bool | no | | Never convert 8BITMIME to 7BIT for a server without 8BITMIME
mime_boundary_length_limit | int | 2048 | 1.. | Maximal MIME boundary length used for matching
mime_nesting_limit | int | 100 | 1.. | Maximal MIME multipart and message/rfc822 nesting depth
# --- external content inspection --------------------------------------------
# (smtp_send_xforward_command and smtp_xforward_timeout live with their neighbours)
smtp_xforward_timeout | time:s | 300s | 1s.. | Time limit for sending XFORWARD and receiving its reply
# --- SASL --------------------------------------------------------------------
smtp_sasl_auth_enable | bool | no | | Enable SASL authentication in the SMTP client
smtp_sasl_password_maps | maps | | | Lookup tables with username:password per remote host or domain
smtp_sasl_security_options | list(noplaintext/noactive/nodictionary/noanonymous/mutual_auth) | noplaintext, noanonymous | | SASL security options for non-TLS sessions
smtp_sasl_mechanism_filter | list | | | Restrict the SASL mechanisms offered by a server to these
smtp_sasl_path | str | | | Implementation-specific SASL configuration path
smtp_sasl_tls_security_options | list(noplaintext/noactive/nodictionary/noanonymous/mutual_auth) | $smtp_sasl_security_options | | SASL security options for TLS sessions
smtp_sasl_tls_verified_security_options | list(noplaintext/noactive/nodictionary/noanonymous/mutual_auth) | $smtp_sasl_tls_security_options | | SASL security options for TLS sessions with a verified server certificate
smtp_sasl_type | str | cyrus | | SASL implementation name (postclient uses its own client for PLAIN and LOGIN)
smtp_sender_dependent_authentication | bool | no | | Choose SASL credentials by sender address
smtp_sasl_auth_cache_name | str | | | Cache of failed SASL logins (not used; accepted for compatibility)
smtp_sasl_auth_cache_time | time:d | 90d | 0.. | Lifetime of a failed-login cache entry
send_cyrus_sasl_authzid | bool | no | | Send the SASL authorization ID along with the login name
# --- STARTTLS ----------------------------------------------------------------
smtp_tls_security_level | str(/none/may/encrypt/dane/dane-only/fingerprint/verify/secure) | | | Default TLS security level of the SMTP client
smtp_starttls_timeout | time:s | 300s | 1s.. | Time limit for the STARTTLS command and handshake
smtp_tls_cert_file | str | | | File with the client RSA certificate in PEM format
smtp_tls_key_file | str | $smtp_tls_cert_file | | File with the client RSA private key in PEM format
smtp_tls_dcert_file | str | | | File with the client DSA certificate in PEM format
smtp_tls_dkey_file | str | $smtp_tls_dcert_file | | File with the client DSA private key in PEM format
smtp_tls_eccert_file | str | | | File with the client ECDSA certificate in PEM format
smtp_tls_eckey_file | str | $smtp_tls_eccert_file | | File with the client ECDSA private key in PEM format
smtp_tls_CAfile | str | | | File with trusted CA certificates in PEM format
smtp_tls_CApath | str | | | Directory with trusted CA certificates in PEM format
smtp_tls_fingerprint_cert_match | list | | | Certificate fingerprints accepted at the fingerprint security level
smtp_tls_fingerprint_digest | str(md5/sha1/sha256/sha384/sha512) | sha256 | | Digest used for certificate fingerprints
smtp_tls_loglevel | int | 0 | 0..4 | Verbosity of TLS logging
smtp_tls_mandatory_ciphers | str(export/low/medium/high/null) | medium | | Minimum cipher grade with mandatory TLS
smtp_tls_exclude_ciphers | list | | | Ciphers or cipher types excluded at every TLS level
smtp_tls_mandatory_exclude_ciphers | list | | | Ciphers or cipher types excluded with mandatory TLS
smtp_tls_mandatory_protocols | list | !SSLv2, !SSLv3, !TLSv1, !TLSv1.1 | | TLS protocols used with mandatory TLS (TLS 1.2 and later)
smtp_tls_note_starttls_offer | bool | no | | Log the hosts that offer STARTTLS when TLS is not used
smtp_tls_policy_maps | maps | | | Per-destination TLS security policy
smtp_tls_protocols | list | !SSLv2, !SSLv3, !TLSv1, !TLSv1.1 | | TLS protocols used with opportunistic TLS (TLS 1.2 and later)
smtp_tls_scert_verifydepth | int | 9 | 1.. | Maximal depth of the server certificate chain
smtp_tls_secure_cert_match | list | nexthop, dot-nexthop | | Names matched against the server certificate at the secure level
smtp_tls_session_cache_database | str | | | TLS session cache (type:name)
smtp_tls_session_cache_timeout | time:s | 3600s | 0.. | Lifetime of a cached TLS session
smtp_tls_verify_cert_match | list | hostname | | Names matched against the server certificate at the verify level
smtp_tls_ciphers | str(export/low/medium/high/null) | medium | | Minimum cipher grade with opportunistic TLS
smtp_tls_block_early_mail_reply | bool | yes | | Treat bytes received before the TLS handshake as an attack (always on)
tls_daemon_random_bytes | int | 32 | 1.. | Random bytes requested from the entropy source per process
tls_export_cipherlist | str | aNULL:-aNULL:HIGH:MEDIUM:!RC4:!EXPORT:!LOW:@STRENGTH | | OpenSSL cipher list for the export grade (no EXPORT ciphers: modern default)
tls_high_cipherlist | str | aNULL:-aNULL:HIGH:!RC4:!EXPORT:@STRENGTH | | OpenSSL cipher list for the high grade
tls_low_cipherlist | str | aNULL:-aNULL:HIGH:MEDIUM:!RC4:!EXPORT:!LOW:@STRENGTH | | OpenSSL cipher list for the low grade (no weak ciphers: modern default)
tls_medium_cipherlist | str | aNULL:-aNULL:HIGH:MEDIUM:!RC4:!EXPORT:!LOW:@STRENGTH | | OpenSSL cipher list for the medium grade
tls_null_cipherlist | str | eNULL:!aNULL | | OpenSSL cipher list for the null grade (authentication without encryption)
tls_random_source | str | dev:/dev/urandom | | Source of entropy for TLS
# --- obsolete STARTTLS controls (accepted, mapped onto smtp_tls_security_level) ---
smtp_use_tls | bool | no | | Obsolete: opportunistic TLS (use smtp_tls_security_level = may)
smtp_enforce_tls | bool | no | | Obsolete: mandatory TLS (use smtp_tls_security_level = encrypt)
smtp_tls_enforce_peername | bool | yes | | Obsolete: verify the server name with smtp_enforce_tls
smtp_tls_per_site | maps | | | Obsolete: per-site TLS policy (use smtp_tls_policy_maps)
smtp_tls_cipherlist | str | | | Obsolete: OpenSSL cipher list for TLS
# --- resource and rate controls --------------------------------------------
smtp_destination_concurrency_limit | int | $default_destination_concurrency_limit | 0.. | Maximal parallel deliveries to one destination via smtp
smtp_destination_recipient_limit | int | $default_destination_recipient_limit | 0.. | Maximal recipients per delivery via smtp
smtp_delivery_batch_limit | int | $default_delivery_batch_limit | 0.. | Maximal messages per delivery request via smtp (postclient)
smtp_agent_threads | int | 5 | 1..1000 | Clients one smtp delivery agent process serves at once, each in a thread; maxproc counts clients (postclient; 1 = as Postfix)
smtp_batch_pipelining | bool | yes | | Within a batched request, send the next message's MAIL FROM, RCPT TO and DATA behind the previous message's end of data when the server offers PIPELINING (postclient)
smtp_connect_timeout | time:s | 30s | 0.. | Time limit for completing a TCP connection (0 = the system's limit)
smtp_helo_timeout | time:s | 300s | 1s.. | Time limit for the greeting and the reply to EHLO/HELO
smtp_mail_timeout | time:s | 300s | 1s.. | Time limit for the reply to MAIL FROM
smtp_rcpt_timeout | time:s | 300s | 1s.. | Time limit for the reply to RCPT TO
smtp_data_init_timeout | time:s | 120s | 1s.. | Time limit for the reply to DATA
smtp_data_xfer_timeout | time:s | 180s | 1s.. | Time limit for sending the message content
smtp_data_done_timeout | time:s | 600s | 1s.. | Time limit for the reply to the final "."
smtp_quit_timeout | time:s | 300s | 1s.. | Time limit for the reply to QUIT
smtp_rset_timeout | time:s | 20s | 1s.. | Time limit for the reply to RSET
smtp_connection_cache_on_demand | bool | yes | | Cache connections to destinations with a backlog in the active queue
smtp_connection_cache_destinations | list | | | Destinations whose connections are always cached
smtp_connection_cache_time_limit | time:s | 2s | 1s.. | How long an unused connection stays in the cache
smtp_connection_reuse_time_limit | time:s | 300s | 1s.. | How long after it was opened a connection may still be reused
smtp_bind_address | str | | | Local IPv4 address to connect from
smtp_bind_address6 | str | | | Local IPv6 address to connect from
smtp_helo_name | str | $myhostname | | Host name sent in EHLO and HELO
smtp_host_lookup | list(dns/native) | dns | | How to find server addresses: dns, native (getaddrinfo) or both
smtp_randomize_addresses | bool | yes | | Shuffle server addresses of equal preference
smtp_fallback_relay | list | $fallback_relay | | Next-hops tried when the destination's own servers fail
smtp_per_record_deadline | bool | yes | | Enforce each state's timeout as a deadline for the whole command and reply (always on)
fallback_relay | list | | | Obsolete name of smtp_fallback_relay's default
# --- LMTP-only parameters (not mirrors) ------------------------------------
lmtp_assume_final | bool | no | | Treat an LMTP success as final delivery for DSN SUCCESS notices
lmtp_cache_connection | bool | yes | | Keep LMTP connections open for reuse (obsolete; see connection caching)
lmtp_tcp_port | str | 24 | | TCP port of an LMTP server when the next-hop names none
# --- troubleshooting --------------------------------------------------------
debug_peer_level | int | 2 | 1.. | Extra verbose logging level for hosts in debug_peer_list
debug_peer_list | list | | | Hosts for which logging is more verbose
error_notice_recipient | str | postmaster | | Recipient of notices about software and resource errors
internal_mail_filter_classes | list | | | Internal mail that is sent to content filters
notify_classes | list(bounce/2bounce/data/delay/policy/protocol/resource/software) | resource, software | | Which problems are reported to the postmaster
# --- miscellaneous ----------------------------------------------------------
best_mx_transport | str | | | Transport used when the local host is the best MX host
config_directory | str | @dynamic | | Directory with main.cf and master.cf (set with -c or $POSTCLIENT_CONFIG_DIR)
connection_cache_protocol_timeout | time:s | 5s | 1s.. | Time limit for a request to the connection cache
connection_cache_status_update_time | time:s | 600s | 1s.. | How often the connection cache logs its statistics
connection_cache_ttl_limit | time:s | 2s | 1s.. | Longest time the connection cache keeps an idle connection
daemon_timeout | time:s | 18000s | 1s.. | Watchdog: longest time a process may take for one request
delay_logging_resolution_limit | int | 2 | 0..6 | Digits after the decimal point in delay= and delays= logging
disable_dns_lookups | bool | no | | Use native host lookups only, no DNS
dns_resolver_addresses | list | | | DNS servers to query (address or address:port), instead of the system resolver
inet_interfaces | list | all | | Local addresses this host receives mail on (for mail loop detection)
inet_protocols | list(ipv4/ipv6/all) | ipv4 | | Address families used for connections and lookups
ipc_timeout | time:s | 3600s | 1s.. | Time limit for internal communication between processes
max_idle | time:s | 100s | 1s.. | How long a child process waits for a request before it exits
max_use | int | 100 | 1.. | How many requests a child process serves before it exits
process_id | str | @dynamic | | Process ID of this process (read-only)
process_name | str | @dynamic | | Name of this process's service (read-only)
proxy_interfaces | list | | | Addresses of proxies or NAT devices that forward mail to this host
syslog_facility | str(auth/authpriv/cron/daemon/ftp/kern/lpr/mail/news/syslog/user/uucp/local0/local1/local2/local3/local4/local5/local6/local7) | mail | | Syslog facility of postclient's logging
syslog_name | str | postclient | | Prefix of postclient's log lines (postclient/smtp[pid]: ...)
tcp_windowsize | int | 0 | 0.. | TCP window size for SMTP connections (0 = the system's default)
line_length_limit | int | 2048 | 512.. | Longest line read from a server reply or a queue file record
# --- queue, master and process parameters -------------------------------------
queue_directory | str | /var/spool/postclient | | Where the queue lives
mail_owner | str | postclient | | Unprivileged account that owns the queue and runs the daemons
mail_name | str | postclient | | Mail system name used in greetings and notices
myhostname | str | @dynamic | | Fully qualified name of this host
mydomain | str | @dynamic | | Domain of this host (myhostname without its first label)
myorigin | str | $myhostname | | Domain appended to unqualified sender addresses
mydestination | list | | | Domains this host delivers locally (postclient relays everything)
relay_domains | list | | | Domains postclient relays to with relay_transport
relayhost | str | | | Default next-hop for all non-local mail (empty: deliver by MX)
default_transport | str | smtp | | Transport for mail without a transport_maps match
relay_transport | str | relay | | Transport for mail to relay_domains
transport_maps | maps | | | Per-recipient or per-domain transport:nexthop
recipient_delimiter | str | | | Separator between user name and address extension (e.g. +)
soft_bounce | bool | no | | Turn hard errors into temporary ones (nothing bounces)
message_size_limit | size | 10240000 | 0.. | Largest accepted message in bytes (0 = no limit)
header_size_limit | size | 102400 | 0.. | Largest header block inspected in one message
hopcount_limit | int | 50 | 1.. | Maximal Received: headers before mail is bounced as looping
minimal_backoff_time | time:s | 300s | 1s.. | Shortest time before a deferred message is retried
maximal_backoff_time | time:s | 4000s | 1s.. | Longest time before a deferred message is retried
maximal_queue_lifetime | time:d | 5d | 0.. | How long a message may stay queued before it bounces
bounce_queue_lifetime | time:d | 5d | 0.. | How long a bounce message may stay queued
delay_warning_time | time:h | 0h | 0.. | Queue age at which the sender is told of a delay (0 = never)
queue_run_delay | time:s | 300s | 1s.. | How often the deferred queue is scanned
transport_retry_time | time:s | 60s | 1s.. | How long a failed transport is avoided
qmgr_message_active_limit | int | 20000 | 1.. | Maximal messages in the active queue
qmgr_message_recipient_limit | int | 20000 | 1.. | Maximal recipients held in memory by the queue manager
qmgr_priority_boost | int | 5 | 0..19 | Nice levels the queue manager raises its CPU priority by, where the system allows it (postclient; 0 = as Postfix)
initial_destination_concurrency | int | 5 | 1.. | Parallel deliveries to a destination when it starts
default_destination_concurrency_limit | int | 20 | 1.. | Maximal parallel deliveries to one destination
default_destination_recipient_limit | int | 50 | 1.. | Maximal recipients per delivery request
default_delivery_batch_limit | int | 20 | 1.. | Maximal messages per delivery request, for a destination with a backlog (postclient; 1 = as Postfix)
lmtp_delivery_batch_limit | int | $default_delivery_batch_limit | 0.. | Maximal messages per delivery request via lmtp (postclient)
relay_delivery_batch_limit | int | $default_delivery_batch_limit | 0.. | Maximal messages per delivery request via relay (postclient)
lmtp_destination_concurrency_limit | int | $default_destination_concurrency_limit | 0.. | Maximal parallel deliveries to one destination via lmtp
lmtp_destination_recipient_limit | int | $default_destination_recipient_limit | 0.. | Maximal recipients per delivery via lmtp
relay_destination_concurrency_limit | int | $default_destination_concurrency_limit | 0.. | Maximal parallel deliveries to one destination via relay
relay_destination_recipient_limit | int | $default_destination_recipient_limit | 0.. | Maximal recipients per delivery via relay
destination_concurrency_failed_cohort_limit | int | 1 | 0.. | Failed deliveries after which a destination is suspended
default_process_limit | int | 100 | 1.. | Default maxproc of a master.cf service
service_throttle_time | time:s | 60s | 1s.. | How long the master waits before restarting a failing service
bounce_notice_recipient | str | postmaster | | Recipient of postmaster copies of bounces
2bounce_notice_recipient | str | postmaster | | Recipient of undeliverable bounces
delay_notice_recipient | str | postmaster | | Recipient of postmaster copies of delay notices
bounce_size_limit | size | 50000 | 1.. | Most original message content returned in a bounce
maillog_file | str | | | Log to this file instead of syslog (/dev/stdout for containers)
"""

# smtp_* parameters that have no lmtp_* mirror: LMTP always sends LHLO, and the
# destination limits are per transport (lmtp_destination_* are in TABLE).
SMTP_ONLY = frozenset({
    "smtp_always_send_ehlo", "smtp_never_send_ehlo",
    "smtp_destination_concurrency_limit", "smtp_destination_recipient_limit",
    "smtp_delivery_batch_limit",
})

# Mirror names that are not simply smtp_ -> lmtp_ (Postfix's own spelling).
LMTP_RENAMES = {
    "smtp_helo_name": "lmtp_lhlo_name",
    "smtp_helo_timeout": "lmtp_lhlo_timeout",
    "smtp_discard_ehlo_keywords": "lmtp_discard_lhlo_keywords",
    "smtp_discard_ehlo_keyword_address_maps": "lmtp_discard_lhlo_keyword_address_maps",
}

# Mirror defaults that differ from the smtp_* default.
LMTP_DEFAULTS = {
    "lmtp_connect_timeout": "0s",
    "lmtp_fallback_relay": "",
}
