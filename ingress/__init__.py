"""The HTTP ingress: authenticate a webhook, publish its raw bytes with a confirm, answer."""
