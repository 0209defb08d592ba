"""RabbitMQ: the broker connection, the transfer-request publisher, the consumer loop and the
settling of each message's outcome."""
