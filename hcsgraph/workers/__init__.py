"""Worker-side plugins that are not about GPUs: host memory allocator settings."""

from hcsgraph.workers.allocator import AllocatorSettings, HostAllocatorPlugin, settings_for

__all__ = ["AllocatorSettings", "HostAllocatorPlugin", "settings_for"]
