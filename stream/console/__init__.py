"""The live page for marketing: ``kairos console`` serves a live page from the topics (docs/console.md)."""
