"""The campaign language: rule files parsed, checked and compiled once, then indexed
so an event reaches only the rules that could match it."""
