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

DEAD_LETTERS_HELP = """\
Look at the dead-letter queue {S3_EVENTS_QUEUE}.dead-letter, move its messages back to
the incoming queue once the cause is fixed, or drop those that will never go through.

Each command reads the queue once, head first, at most 100 messages unacked at a time,
and every dead letter it does not take stays, in its order: up to 100 are handed back
with one nack at the end; a longer queue is brought round once (each published again
to its tail and acked, 100 to a transaction). One dead-letters command at a time: a
second one is refused while another reads the queue.

examples:
  s3-events-handler dead-letters list
  s3-events-handler dead-letters show msg-7
  s3-events-handler dead-letters replay --reason "FTP" --dry-run
  s3-events-handler dead-letters drop --reason "body is not JSON" --dry-run
"""

LIST_HELP = """\
List the dead letters, head of the queue first, each as it is read: id, when
dead-lettered, stage, bucket/key and reason. Every one stays in the queue, as
`dead-letters --help` says.

The id is the message_id when the message has one, else a short hash of its body and
headers; `dead-letters replay --id` takes it.

exit status: 0 listed, 1 the broker or the queue is not there, 2 settings wrong

examples:
  s3-events-handler dead-letters list
  s3-events-handler dead-letters list --limit 20
  s3-events-handler dead-letters list --json | jq -r 'select(.stage == "parse") | .id'
"""

SHOW_HELP = """\
Print one dead letter whole: its id and when it was dead-lettered, its AMQP
properties, its headers (x-error, x-error-stage, x-pid, x-death, ...) and its body,
as text (characters a terminal should not interpret shown escaped). Several dead
letters may share an id (the records of one split message share its message_id):
each is printed. Every dead letter stays in the queue, as `dead-letters --help` says.

exit status: 0 shown, 1 no dead letter with that id (or the broker or the queue is
not there), 2 settings wrong

example:
  s3-events-handler dead-letters show msg-7
"""

REPLAY_HELP = """\
Move dead letters back to the incoming queue {S3_EVENTS_QUEUE} (default exchange), body
and properties unchanged, headers x-attempt, x-error, x-error-stage and
x-dead-lettered-at removed, x-pid kept (the replay reuses the PID).

Each dead letter moves in one AMQP transaction: the copy's publish and the dead
letter's ack are committed together. Interrupted (killed, connection lost), a replay
loses and doubles nothing; run it again to finish. Dead letters not chosen stay, as
`dead-letters --help` says.

exit status: 0 done, 1 something not replayed or an --id not there (said which; a
--dry-run says the same), 2 settings wrong or no choice given

examples:
  s3-events-handler dead-letters replay --all
  s3-events-handler dead-letters replay --id 3f2a9c0d1e4b --id msg-7
  s3-events-handler dead-letters replay --reason "no folder" --dry-run
  s3-events-handler dead-letters replay --reason "no folder" --limit 10
  s3-events-handler dead-letters replay --reason-regex "answered 5[0-9][0-9]"
"""

DROP_HELP = """\
Remove dead letters for good: those that will never go through (a body that is not
JSON, an event for a test bucket), once looked at. Each removal is its own AMQP
transaction and is logged (INFO: the id, the queue, x-error and x-error-stage, bucket,
key, x-pid). Dead letters not chosen stay, as `dead-letters --help` says. On a
terminal it asks first (the choice and the queue's depth).

exit status: 0 done, 1 an --id not there, or the question answered no (or the broker
or the queue not there), 2 settings wrong, no choice given, or no --yes without a
terminal

examples:
  s3-events-handler dead-letters drop --reason "body is not JSON" --dry-run
  s3-events-handler dead-letters drop --reason "body is not JSON"
  s3-events-handler dead-letters drop --id 0bce0d9dc72b --yes
"""
