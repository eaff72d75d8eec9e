"""Tests that run the real Claude Code CLI with the plugin loaded."""
