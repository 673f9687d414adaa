# Shared by the tests in this directory (sourced, not run).

# Every message over POP3 port 110, as "number key" lines (UIDL = Maildir key).
pop3_uidls() {
	curl --silent --show-error --user any:thing --request UIDL pop3://127.0.0.1/ | tr -d '\r'
}

# The message with this Maildir key, over POP3, on stdout.
pop3_message() {
	number=$(pop3_uidls | awk -v key="$1" '$2 == key { print $1 }')
	if [ -z "$number" ]; then
		echo "no message with the key $1 on POP3 port 110" >&2
		return 1
	fi
	curl --silent --show-error --user any:thing "pop3://127.0.0.1/$number" | tr -d '\r'
}

# The key of the one message over POP3 whose text holds this token.
pop3_key_of() {
	for key in $(pop3_uidls | awk '{ print $2 }'); do
		if pop3_message "$key" | grep -qF "$1"; then
			echo "$key"
			return 0
		fi
	done
	echo "no message with $1 on POP3 port 110" >&2
	return 1
}

# The delivery line of this key, from this listener (smtp or submission), in
# the journal; waits a little, as journald may write it a moment later.
journal_delivery() {
	tries=0
	while [ "$tries" -lt 50 ]; do
		line=$(journalctl --quiet --no-pager --output=cat --unit=baremail-smtp.service \
			"BAREMAIL_MAILID=$1" "BAREMAIL_LISTENER=$2")
		case "$line" in
			"delivered $1 "*)
				echo "$line"
				return 0
				;;
		esac
		tries=$((tries + 1))
		sleep 0.2
	done
	echo "no line 'delivered $1' with BAREMAIL_LISTENER=$2 in the journal of baremail-smtp.service" >&2
	journalctl --no-pager --unit=baremail-smtp.service --lines=20 >&2
	return 1
}
