# ---------------------------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------------------------

variable "cluster_name" {
  description = "Name of the EKS cluster; also the prefix of every other resource name (IAM roles, bucket, database)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "cluster_name must be 3-32 characters of lowercase letters, digits and '-', start with a letter and not end with '-' (it prefixes IAM role, S3 bucket and RDS names)."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes minor version, e.g. \"1.32\"."
  type        = string
  default     = "1.32"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must be a minor version such as \"1.32\"."
  }
}

variable "cluster_endpoint_public_access" {
  description = "Expose the Kubernetes API endpoint publicly (restricted to cluster_endpoint_public_access_cidrs). The private endpoint is always on."
  type        = bool
  default     = true
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "CIDR blocks allowed to reach the public API endpoint. Narrow this to your office/VPN ranges."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.cluster_endpoint_public_access_cidrs : can(cidrhost(c, 0))])
    error_message = "cluster_endpoint_public_access_cidrs must all be CIDR blocks such as \"203.0.113.0/24\"."
  }
}

variable "cluster_log_types" {
  description = "Control-plane log types sent to CloudWatch Logs."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  validation {
    condition     = alltrue([for t in var.cluster_log_types : contains(["api", "audit", "authenticator", "controllerManager", "scheduler"], t)])
    error_message = "cluster_log_types may only contain api, audit, authenticator, controllerManager and scheduler."
  }
}

variable "cluster_log_retention_days" {
  description = "Retention of the control-plane CloudWatch log group, in days."
  type        = number
  default     = 90
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the module's KMS key (EKS secrets, S3, RDS) is deleted after `terraform destroy`."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30 (an AWS limit)."
  }
}

variable "oidc_thumbprints" {
  description = <<-EOT
    Thumbprints for the IRSA OpenID Connect provider. Leave empty: IAM no longer uses the thumbprint
    for EKS OIDC issuers (it trusts its own library of root CAs since July 2023) and the AWS provider
    fills it in. Set it only for partitions that still require one.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for t in var.oidc_thumbprints : can(regex("^[0-9a-fA-F]{40}$", t))])
    error_message = "oidc_thumbprints must be 40-character hex SHA-1 fingerprints."
  }
}

variable "tags" {
  description = "Tags added to every resource the module creates."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------
# Network: either a new VPC (default) or existing subnets
# ---------------------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR of the VPC the module creates (ignored when vpc_id is set). Split into one public (1/16 of the range) and one private (1/8) subnet per AZ."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("^[0-9.]+/(1[6-9]|20)$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block with a prefix between /16 and /20, e.g. \"10.0.0.0/16\"."
  }
}

variable "availability_zones" {
  description = "AZs for the new VPC. Empty: the first az_count available AZs of the region."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) >= 2 && length(var.availability_zones) <= 4)
    error_message = "availability_zones must list 2 to 4 AZs (EKS and RDS subnet groups need at least two), or be empty to pick them automatically."
  }
}

variable "az_count" {
  description = "Number of AZs to use when availability_zones is empty."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be between 2 and 4 (EKS and RDS need at least 2 AZs; the subnet plan has room for 4)."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all private subnets (cheaper) instead of one per AZ (survives an AZ outage)."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "Use this existing VPC instead of creating one. Requires private_subnet_ids."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || length(var.private_subnet_ids) >= 2
    error_message = "vpc_id needs private_subnet_ids (at least 2, in different AZs); leave vpc_id null to create a VPC."
  }
}

variable "private_subnet_ids" {
  description = "Existing private subnets (in at least 2 AZs, with NAT egress) for the control plane, nodes and database. Only used with vpc_id."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.private_subnet_ids) == 0 || length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must list at least 2 subnets in different AZs, or be empty to create a VPC."
  }
}

# ---------------------------------------------------------------------------------------------
# Node groups
# ---------------------------------------------------------------------------------------------

variable "system_node_group" {
  description = "The always-on CPU node group for system pods (CoreDNS, the mlplane operator, MLflow, cluster-autoscaler)."
  type = object({
    instance_types = optional(list(string), ["m6i.large"])
    min_size       = optional(number, 2)
    max_size       = optional(number, 4)
    desired_size   = optional(number, 2)
    disk_size      = optional(number, 50)
  })
  default = {}

  validation {
    condition = (
      var.system_node_group.min_size >= 1 &&
      var.system_node_group.max_size >= var.system_node_group.min_size &&
      var.system_node_group.desired_size >= var.system_node_group.min_size &&
      var.system_node_group.desired_size <= var.system_node_group.max_size
    )
    error_message = "system_node_group needs 1 <= min_size <= desired_size <= max_size (system pods must always have a node)."
  }
}

variable "gpu_node_groups" {
  description = <<-EOT
    GPU node groups, keyed by a short name (used in the node group name and the
    `mlplane.io/node-pool` label). Every node is labelled `nvidia.com/gpu.present=true` and tainted
    `nvidia.com/gpu:NoSchedule`, matching the tolerations mlplane renders for GPU workloads.
    min_size defaults to 0 so an idle pool costs nothing; the cluster autoscaler scales it up when
    a GPU pod is pending. gpus_per_node feeds the autoscaler's scale-from-zero node template and
    must match the instance types (g5.xlarge: 1, g5.12xlarge: 4, p4d.24xlarge/p5.48xlarge: 8).
  EOT
  type = map(object({
    instance_types = list(string)
    ami_type       = optional(string, "AL2023_x86_64_NVIDIA")
    capacity_type  = optional(string, "ON_DEMAND")
    min_size       = optional(number, 0)
    max_size       = optional(number, 2)
    disk_size      = optional(number, 200)
    gpus_per_node  = optional(number, 1)
    labels         = optional(map(string), {})
  }))
  default = {
    g5 = {
      instance_types = ["g5.xlarge", "g5.2xlarge"]
    }
  }

  validation {
    condition     = alltrue([for name, g in var.gpu_node_groups : can(regex("^[a-z0-9][a-z0-9-]{0,19}$", name))])
    error_message = "gpu_node_groups keys must be 1-20 characters of lowercase letters, digits and '-'."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : g.min_size >= 0])
    error_message = "gpu_node_groups: min_size must be >= 0 (0 lets the pool scale to zero)."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : g.max_size >= g.min_size && g.max_size >= 1])
    error_message = "gpu_node_groups: max_size must be >= min_size and >= 1."
  }

  validation {
    condition = alltrue(flatten([
      for g in values(var.gpu_node_groups) : [
        for t in g.instance_types : contains(["g4dn", "g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en"], split(".", t)[0])
      ]
    ]))
    error_message = "gpu_node_groups: instance_types must be NVIDIA GPU instances of the families g4dn, g5, g6, g6e, p4d, p4de, p5, p5e or p5en (e.g. \"g5.xlarge\")."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : length(g.instance_types) >= 1])
    error_message = "gpu_node_groups: instance_types must list at least one instance type."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : contains(["AL2023_x86_64_NVIDIA", "AL2_x86_64_GPU", "BOTTLEROCKET_x86_64_NVIDIA"], g.ami_type)])
    error_message = "gpu_node_groups: ami_type must be an NVIDIA AMI type: AL2023_x86_64_NVIDIA, AL2_x86_64_GPU or BOTTLEROCKET_x86_64_NVIDIA."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : contains(["ON_DEMAND", "SPOT"], g.capacity_type)])
    error_message = "gpu_node_groups: capacity_type must be ON_DEMAND or SPOT."
  }

  validation {
    condition     = alltrue([for g in values(var.gpu_node_groups) : g.gpus_per_node >= 1 && g.gpus_per_node <= 16])
    error_message = "gpu_node_groups: gpus_per_node must be between 1 and 16."
  }
}

# ---------------------------------------------------------------------------------------------
# MLflow storage: S3 artifacts, RDS PostgreSQL backend
# ---------------------------------------------------------------------------------------------

variable "artifact_bucket_name" {
  description = "Name of the MLflow artifact bucket. Null: \"<cluster_name>-mlflow-artifacts-<account id>\"."
  type        = string
  default     = null

  validation {
    condition     = var.artifact_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifact_bucket_name))
    error_message = "artifact_bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, '.' and '-')."
  }
}

variable "artifact_bucket_force_destroy" {
  description = "Let `terraform destroy` delete the artifact bucket with its objects. Keep false for real data."
  type        = bool
  default     = false
}

variable "artifact_noncurrent_version_expiration_days" {
  description = "Days after which overwritten or deleted artifact versions are expired."
  type        = number
  default     = 30

  validation {
    condition     = var.artifact_noncurrent_version_expiration_days >= 1
    error_message = "artifact_noncurrent_version_expiration_days must be >= 1."
  }
}

variable "db_instance_class" {
  description = "RDS instance class for the MLflow backend store."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_engine_version" {
  description = "PostgreSQL major (or major.minor) version."
  type        = string
  default     = "16"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB; storage autoscaling grows it up to db_max_allocated_storage."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage" {
  description = "Upper bound for RDS storage autoscaling, in GiB."
  type        = number
  default     = 100
}

variable "db_multi_az" {
  description = "Run a standby replica in a second AZ."
  type        = bool
  default     = false
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups."
  type        = number
  default     = 7
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database (set false, apply, then destroy, to tear a cluster down)."
  type        = bool
  default     = true
}

variable "db_skip_final_snapshot" {
  description = "Skip the final snapshot when the database is deleted."
  type        = bool
  default     = false
}

variable "db_username" {
  description = "Master user of the MLflow database. Its password is generated and kept in Secrets Manager by RDS."
  type        = string
  default     = "mlflow"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_username)) && !contains(["admin", "postgres", "rdsadmin"], var.db_username)
    error_message = "db_username must start with a letter, use lowercase letters, digits and '_', and not be a reserved name (admin, postgres, rdsadmin)."
  }
}

# ---------------------------------------------------------------------------------------------
# IRSA: Kubernetes service accounts allowed to assume the module's IAM roles
# ---------------------------------------------------------------------------------------------

variable "mlplane_namespace" {
  description = "Namespace the mlplane chart is installed into."
  type        = string
  default     = "mlplane"
}

variable "mlflow_service_account" {
  description = "Service account of the MLflow server (S3 read/write on the artifact bucket, read of the DB password secret)."
  type        = string
  default     = "mlplane-mlflow"
}

variable "model_server_service_account" {
  description = "Service account of model servers (S3 read-only on the artifact bucket): the Platform's spec.serving.serviceAccountName, created by the mlplane chart (serving.serviceAccount.name)."
  type        = string
  default     = "mlplane-model-server"
}

variable "model_server_namespaces" {
  description = "Namespaces besides mlplane_namespace where models are deployed. The model-server role trusts model_server_service_account in each; the rendered chart values list them in serving.namespaces, so the chart creates the account there."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for ns in var.model_server_namespaces : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", ns))])
    error_message = "model_server_namespaces must be Kubernetes namespace names (lowercase letters, digits and '-', at most 63 characters)."
  }
}

variable "cluster_autoscaler_namespace" {
  description = "Namespace of the cluster autoscaler."
  type        = string
  default     = "kube-system"
}

variable "cluster_autoscaler_service_account" {
  description = "Service account of the cluster autoscaler."
  type        = string
  default     = "cluster-autoscaler"
}
