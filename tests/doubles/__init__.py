"""Test doubles of outside systems that speak real HTTP on loopback."""
