#!/bin/sh
# Install the Debian packages whose programs the tests use as real peers:
#   postfix        smtp-sink and smtpd (receiving servers), and the drain benchmark
#   dovecot-lmtpd  a real LMTP server
#   dnsmasq        a real DNS server for MX/A records
#   cython3        Debian bookworm's Cython 0.29.32, to prove pyx/ still builds with it
# Services are kept from starting (policy-rc.d) and postfix is installed
# unconfigured, so nothing listens on port 25 or 53 afterwards.
set -eu
PACKAGES="postfix dovecot-core dovecot-lmtpd dnsmasq-base cython3"
missing=""
for package in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $package"
done
[ -z "$missing" ] && { echo "test packages already installed"; exit 0; }
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && created_policy=yes
fi
apt-get update -q
apt-get install -y -q --no-install-recommends $missing
[ "$created_policy" = yes ] && rm -f "$policy"
exit 0
