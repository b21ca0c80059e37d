# Example root: one EKS cluster with a system node group, two GPU pools that scale to zero,
# an S3 artifact bucket and an RDS PostgreSQL database for MLflow. See ../../README.md.

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

module "gpu_cluster" {
  source = "../../modules/gpu-cluster"

  cluster_name           = var.cluster_name
  gpu_node_groups        = var.gpu_node_groups
  db_deletion_protection = var.db_deletion_protection
  tags                   = var.tags
}
