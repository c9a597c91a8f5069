"""The write path: the events HTTP router, batch parsing, bulk import and the producer client."""
