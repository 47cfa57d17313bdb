"""Running hcsgraph on clusters: SLURM workers (:mod:`hcsgraph.deploy.slurm`) and the client/worker check
(:mod:`hcsgraph.deploy.versions`). Container images and Kubernetes manifests are in ``docker/``; see
docs/cluster.md.
"""

from hcsgraph.deploy.versions import ClusterMismatchError, check_cluster, pipeline_memory_types

__all__ = ["ClusterMismatchError", "check_cluster", "pipeline_memory_types"]
