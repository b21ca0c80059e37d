variable "region" {
  description = "AWS region to create the cluster in."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "Name of the EKS cluster (and prefix of the other resources)."
  type        = string
  default     = "mlplane"
}

variable "gpu_node_groups" {
  description = "GPU pools; see the module's variable of the same name. Both scale to zero when idle."
  type        = any
  default = {
    # Inference and fine-tuning of small models: 1x A10G (24 GiB) per node.
    g5 = {
      instance_types = ["g5.xlarge", "g5.2xlarge"]
      max_size       = 4
      gpus_per_node  = 1
    }
    # Larger models: 4x L4 (24 GiB each) per node.
    g6-multi = {
      instance_types = ["g6.12xlarge"]
      max_size       = 2
      gpus_per_node  = 4
    }
  }
}

variable "db_deletion_protection" {
  description = "Protect the MLflow database from deletion. Set false (and apply) before `terraform destroy`."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default = {
    project = "mlplane"
  }
}
