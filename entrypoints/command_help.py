"""What `s3-events-handler COMMAND --help` says beside the options: what the command does,
its exit statuses and examples, as an operator at a terminal needs them."""

CONSUME_HELP = """\
Consume S3 events from RabbitMQ until SIGTERM or SIGINT, then finish the message in
hand within SHUTDOWN_GRACE_SECONDS. Declares its queues at start and after every
reconnect. Settings come from the environment (see .env.example).

example:
  set -a; . ./.env; set +a
  s3-events-handler consume --config /app/config.yml
"""

PROCESS_HELP = """\
Run one event through the service, against the configured MediaHaven, PID service,
Organisations API, FTP server and broker, and print its outcome as JSON.

exit status: 0 done, 1 dead-lettered, 2 settings wrong or FILE unreadable,
75 to be retried (the broker or a service did not answer)

examples:
  s3-events-handler process event.json
  cat event.json | s3-events-handler process -
"""

DEMO_HELP = """\
Run the golden example events through the service on in-memory adapters and print the
sidecars, transfer requests and MediaHaven calls. Needs no settings and no servers.

example:
  s3-events-handler demo | less
"""

CHECK_CONFIG_HELP = """\
Check the settings, the destination table and the ledger location, then that the
broker, MediaHaven, the PID service, the Organisations API and the FTP server answer
and that the queues and destination folders exist. One line per check.

Read-only: passive declares on the broker (nothing created), a MediaHaven token and
one search, a TCP connection to the PID service (no PID minted), one Organisations
lookup, an FTP login and listing (nothing uploaded), no ledger write (a missing
SQLite file is not created).

exit status: 0 healthy, 2 a setting is wrong, 1 a system does not answer (named)

example:
  s3-events-handler check-config && s3-events-handler consume
"""
