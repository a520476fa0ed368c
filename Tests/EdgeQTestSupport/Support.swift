// Test helpers shared by the test targets (re-exports EdgeQSystem: broker fixture, child processes).
@_exported import EdgeQSystem
