"""Model-free tests (`make unit`). A package, so its modules never clash with tests/integration's of the same name."""
