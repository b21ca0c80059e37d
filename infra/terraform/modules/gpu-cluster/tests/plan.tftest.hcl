# Offline plan tests: the AWS provider is mocked (no credentials, no API calls). Mocked computed
# values are generated at plan time (override_during = plan) so outputs and policies are known.
# Run from the module directory: `terraform init -backend=false && terraform test`.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

override_resource {
  target          = aws_iam_role.irsa["mlflow"]
  override_during = plan
  values          = { arn = "arn:aws:iam::123456789012:role/mlplane-test-mlflow" }
}

override_resource {
  target          = aws_iam_role.irsa["model_server"]
  override_during = plan
  values          = { arn = "arn:aws:iam::123456789012:role/mlplane-test-model-server" }
}

override_resource {
  target          = aws_iam_role.irsa["cluster_autoscaler"]
  override_during = plan
  values          = { arn = "arn:aws:iam::123456789012:role/mlplane-test-cluster-autoscaler" }
}

variables {
  cluster_name = "mlplane-test"
}

run "gpu_pools_are_tainted_labelled_and_scale_to_zero" {
  command = plan

  variables {
    gpu_node_groups = {
      g5 = { instance_types = ["g5.xlarge"] }
      p5 = { instance_types = ["p5.48xlarge"], max_size = 1, gpus_per_node = 8, ami_type = "AL2_x86_64_GPU", labels = { team = "llm" } }
    }
  }

  assert {
    condition     = length(aws_eks_node_group.gpu) == 2
    error_message = "expected one node group per entry of gpu_node_groups"
  }

  assert {
    condition = alltrue([for ng in aws_eks_node_group.gpu : anytrue([
      for t in ng.taint : t.key == "nvidia.com/gpu" && t.effect == "NO_SCHEDULE"
    ])])
    error_message = "every GPU node group must carry the nvidia.com/gpu NoSchedule taint"
  }

  assert {
    condition     = alltrue([for ng in aws_eks_node_group.gpu : ng.labels["nvidia.com/gpu.present"] == "true"])
    error_message = "every GPU node group must be labelled nvidia.com/gpu.present=true"
  }

  assert {
    condition     = aws_eks_node_group.gpu["p5"].labels["team"] == "llm" && aws_eks_node_group.gpu["p5"].labels["mlplane.io/node-pool"] == "p5"
    error_message = "user labels and the mlplane.io/node-pool label must be kept"
  }

  assert {
    condition     = aws_eks_node_group.gpu["g5"].scaling_config[0].min_size == 0 && aws_eks_node_group.gpu["g5"].scaling_config[0].desired_size == 0
    error_message = "GPU pools must default to min_size = desired_size = 0 (scale to zero)"
  }

  assert {
    condition     = aws_eks_node_group.gpu["g5"].ami_type == "AL2023_x86_64_NVIDIA" && aws_eks_node_group.gpu["p5"].ami_type == "AL2_x86_64_GPU"
    error_message = "GPU pools must use an NVIDIA AMI type (AL2023_x86_64_NVIDIA by default)"
  }

  assert {
    condition = alltrue([for ng in aws_eks_node_group.gpu :
      ng.tags["k8s.io/cluster-autoscaler/enabled"] == "true" &&
      ng.tags["k8s.io/cluster-autoscaler/mlplane-test"] == "owned"
    ])
    error_message = "GPU node groups must carry the cluster-autoscaler discovery tags"
  }

  assert {
    condition = (
      aws_autoscaling_group_tag.gpu["p5|k8s.io/cluster-autoscaler/enabled"].tag[0].value == "true" &&
      aws_autoscaling_group_tag.gpu["p5|k8s.io/cluster-autoscaler/mlplane-test"].tag[0].value == "owned" &&
      aws_autoscaling_group_tag.gpu["p5|k8s.io/cluster-autoscaler/node-template/label/nvidia.com/gpu.present"].tag[0].value == "true" &&
      aws_autoscaling_group_tag.gpu["p5|k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"].tag[0].value == "true:NoSchedule" &&
      aws_autoscaling_group_tag.gpu["p5|k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"].tag[0].value == "8" &&
      aws_autoscaling_group_tag.gpu["g5|k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"].tag[0].value == "1"
    )
    error_message = "the GPU Auto Scaling groups must carry discovery and node-template (scale-from-zero) tags"
  }

  assert {
    condition     = aws_eks_node_group.system.scaling_config[0].min_size >= 1 && length(aws_eks_node_group.system.taint) == 0
    error_message = "the system node group must always have a node and no taint"
  }
}

run "cluster_logging_encryption_and_network" {
  command = plan

  assert {
    condition     = toset(aws_eks_cluster.this.enabled_cluster_log_types) == toset(["api", "audit", "authenticator", "controllerManager", "scheduler"])
    error_message = "all control-plane log types must be enabled by default"
  }

  assert {
    condition     = one(aws_eks_cluster.this.encryption_config[0].resources) == "secrets" && aws_eks_cluster.this.encryption_config[0].provider[0].key_arn == aws_kms_key.this.arn
    error_message = "Kubernetes secrets must be envelope-encrypted with the module's KMS key"
  }

  assert {
    condition     = aws_kms_key.this.enable_key_rotation
    error_message = "the KMS key must rotate"
  }

  assert {
    condition     = length(aws_vpc.this) == 1 && length(aws_subnet.private) == 3 && length(aws_subnet.public) == 3 && length(aws_nat_gateway.this) == 1
    error_message = "default network: a new VPC, 3 AZs, one public and one private subnet each, one NAT gateway"
  }

  assert {
    condition     = alltrue([for s in aws_subnet.private : s.tags["kubernetes.io/role/internal-elb"] == "1"]) && alltrue([for s in aws_subnet.public : s.tags["kubernetes.io/role/elb"] == "1"])
    error_message = "subnets must carry the load-balancer role tags"
  }

  assert {
    condition     = output.kubeconfig_command == "aws eks update-kubeconfig --region us-east-1 --name mlplane-test"
    error_message = "kubeconfig_command output is wrong: ${output.kubeconfig_command}"
  }
}

run "artifact_bucket_is_private_encrypted_versioned" {
  command = plan

  assert {
    condition     = aws_s3_bucket.artifacts.bucket == "mlplane-test-mlflow-artifacts-123456789012"
    error_message = "default bucket name is <cluster>-mlflow-artifacts-<account>"
  }

  assert {
    condition     = aws_s3_bucket_versioning.artifacts.versioning_configuration[0].status == "Enabled"
    error_message = "artifact bucket must be versioned"
  }

  assert {
    condition = anytrue([for r in aws_s3_bucket_server_side_encryption_configuration.artifacts.rule : anytrue([
      for d in r.apply_server_side_encryption_by_default : d.sse_algorithm == "aws:kms" && d.kms_master_key_id == aws_kms_key.this.arn
    ])])
    error_message = "artifact bucket must be SSE-KMS encrypted with the module's key"
  }

  assert {
    condition = (
      aws_s3_bucket_public_access_block.artifacts.block_public_acls &&
      aws_s3_bucket_public_access_block.artifacts.block_public_policy &&
      aws_s3_bucket_public_access_block.artifacts.ignore_public_acls &&
      aws_s3_bucket_public_access_block.artifacts.restrict_public_buckets
    )
    error_message = "all public access to the artifact bucket must be blocked"
  }

  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.artifacts.rule[0].noncurrent_version_expiration[0].noncurrent_days == 30
    error_message = "noncurrent artifact versions must expire (30 days by default)"
  }

  assert {
    condition     = jsondecode(aws_s3_bucket_policy.artifacts.policy).Statement[0].Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "the bucket policy must deny non-TLS access"
  }
}

run "database_is_private_encrypted_with_managed_password" {
  command = plan

  assert {
    condition     = aws_db_instance.mlflow.publicly_accessible == false
    error_message = "the MLflow database must not be publicly accessible"
  }

  assert {
    condition     = aws_db_instance.mlflow.storage_encrypted && aws_db_instance.mlflow.kms_key_id == aws_kms_key.this.arn
    error_message = "the MLflow database must be encrypted with the module's key"
  }

  assert {
    condition     = aws_db_instance.mlflow.manage_master_user_password && aws_db_instance.mlflow.password == null
    error_message = "the master password must be managed by RDS in Secrets Manager"
  }

  assert {
    condition     = aws_db_instance.mlflow.engine == "postgres" && aws_db_instance.mlflow.db_name == "mlflow" && aws_db_instance.mlflow.deletion_protection
    error_message = "expected a deletion-protected PostgreSQL database named mlflow"
  }

  assert {
    condition     = aws_vpc_security_group_ingress_rule.db_from_cluster.from_port == 5432 && aws_vpc_security_group_ingress_rule.db_from_cluster.cidr_ipv4 == null
    error_message = "the database must only admit 5432 from the cluster security group, never from a CIDR"
  }

  assert {
    condition     = output.db_master_password_secret_arn == "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-example"
    error_message = "db_master_password_secret_arn must come from the RDS-managed secret"
  }
}

run "irsa_trust_is_limited_to_one_service_account_each" {
  command = plan

  assert {
    condition = alltrue([for name, sa in {
      mlflow             = "system:serviceaccount:mlplane:mlplane-mlflow"
      model_server       = "system:serviceaccount:mlplane:mlplane-model-server"
      cluster_autoscaler = "system:serviceaccount:kube-system:cluster-autoscaler"
      } : jsondecode(aws_iam_role.irsa[name].assume_role_policy).Statement[0].Condition.StringEquals == {
      "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:sub" = sa
      "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:aud" = "sts.amazonaws.com"
    }])
    error_message = "each IRSA role must trust exactly its service account (sub) and the STS audience (aud)"
  }

  assert {
    condition = alltrue([for r in aws_iam_role.irsa :
      length(jsondecode(r.assume_role_policy).Statement) == 1 &&
      jsondecode(r.assume_role_policy).Statement[0].Principal.Federated == aws_iam_openid_connect_provider.this.arn &&
      jsondecode(r.assume_role_policy).Statement[0].Action == "sts:AssumeRoleWithWebIdentity"
    ])
    error_message = "IRSA roles must be assumable only through the cluster's OIDC provider"
  }

  assert {
    condition     = contains(flatten([for s in jsondecode(aws_iam_role_policy.irsa["mlflow"].policy).Statement : s.Action]), "s3:PutObject")
    error_message = "MLflow must be able to write artifacts"
  }

  assert {
    condition = length(setintersection(
      toset(flatten([for s in jsondecode(aws_iam_role_policy.irsa["model_server"].policy).Statement : s.Action])),
      toset(["s3:PutObject", "s3:DeleteObject", "secretsmanager:GetSecretValue", "kms:Encrypt", "kms:GenerateDataKey"]),
    )) == 0
    error_message = "model servers must have read-only access to artifacts"
  }

  assert {
    condition     = jsondecode(aws_iam_role_policy.irsa["cluster_autoscaler"].policy).Statement[1].Condition.StringEquals["aws:ResourceTag/k8s.io/cluster-autoscaler/mlplane-test"] == "owned"
    error_message = "the autoscaler may only scale Auto Scaling groups owned by this cluster"
  }
}

run "custom_service_accounts" {
  command = plan

  variables {
    mlplane_namespace            = "ml"
    mlflow_service_account       = "tracking"
    model_server_service_account = "serving"
  }

  assert {
    condition     = jsondecode(aws_iam_role.irsa["mlflow"].assume_role_policy).Statement[0].Condition.StringEquals["oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:sub"] == "system:serviceaccount:ml:tracking"
    error_message = "the MLflow role must follow mlplane_namespace/mlflow_service_account"
  }

  assert {
    condition     = jsondecode(aws_iam_role.irsa["model_server"].assume_role_policy).Statement[0].Condition.StringEquals["oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:sub"] == "system:serviceaccount:ml:serving"
    error_message = "the model-server role must follow mlplane_namespace/model_server_service_account"
  }

  assert {
    condition     = yamldecode(output.mlplane_values).platform.serving.serviceAccountName == "serving" && yamldecode(output.mlplane_values).serving.namespaces == []
    error_message = "the chart values must name the model-server account the role trusts"
  }
}

run "values_file_for_the_chart" {
  command = plan

  assert {
    condition = yamldecode(output.mlplane_values).mlflow.backendStore == {
      type              = "postgresql"
      host              = "mlplane-test-mlflow.cexample.us-east-1.rds.amazonaws.com"
      port              = 5432
      database          = "mlflow"
      username          = "mlflow"
      passwordSecretArn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-example"
    }
    error_message = "mlflow.backendStore must point at the database and its password secret"
  }

  assert {
    condition     = yamldecode(output.mlplane_values).mlflow.artifactStore == { type = "s3", bucket = "mlplane-test-mlflow-artifacts-123456789012", region = "us-east-1" }
    error_message = "mlflow.artifactStore must point at the bucket"
  }

  assert {
    condition = (
      yamldecode(output.mlplane_values).mlflow.serviceAccount.annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/mlplane-test-mlflow" &&
      yamldecode(output.mlplane_values).serving.serviceAccount.annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/mlplane-test-model-server" &&
      yamldecode(output.mlplane_values).clusterAutoscaler.serviceAccount.annotations["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/mlplane-test-cluster-autoscaler"
    )
    error_message = "service accounts must be annotated with their IRSA roles"
  }

  assert {
    condition = yamldecode(output.mlplane_values).platform.gpuNodePool == {
      nodeSelector    = { "nvidia.com/gpu.present" = "true" }
      tolerations     = [{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]
      gpuResourceName = "nvidia.com/gpu"
      gpuHeadroom     = 0
    }
    error_message = "gpuNodePool must match the GPU node groups' label and taint"
  }
}

run "model_servers_in_several_namespaces" {
  command = plan

  variables {
    model_server_namespaces = ["team-a", "mlplane", "team-b"]
  }

  assert {
    condition = jsondecode(aws_iam_role.irsa["model_server"].assume_role_policy).Statement[0].Condition.StringEquals == {
      "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:sub" = [
        "system:serviceaccount:mlplane:mlplane-model-server",
        "system:serviceaccount:team-a:mlplane-model-server",
        "system:serviceaccount:team-b:mlplane-model-server",
      ]
      "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:aud" = "sts.amazonaws.com"
    }
    error_message = "the model-server role must trust its account in mlplane_namespace and each model_server_namespaces entry, nothing else"
  }

  # The chart creates the account in its release namespace (mlplane_namespace) and in serving.namespaces,
  # named by the release Platform's serving.serviceAccountName: exactly the subjects the role trusts.
  assert {
    condition = toset([
      for ns in concat([var.mlplane_namespace], yamldecode(output.mlplane_values).serving.namespaces) :
      "system:serviceaccount:${ns}:${yamldecode(output.mlplane_values).platform.serving.serviceAccountName}"
    ]) == toset(jsondecode(aws_iam_role.irsa["model_server"].assume_role_policy).Statement[0].Condition.StringEquals["oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:sub"])
    error_message = "the rendered chart values must name exactly the namespaces and account the model-server role trusts"
  }

  assert {
    condition     = jsondecode(aws_iam_role.irsa["mlflow"].assume_role_policy).Statement[0].Condition.StringEquals["oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE:sub"] == "system:serviceaccount:mlplane:mlplane-mlflow"
    error_message = "model_server_namespaces must not widen the MLflow role's trust"
  }
}

run "existing_vpc" {
  command = plan

  variables {
    vpc_id             = "vpc-0123456789abcdef0"
    private_subnet_ids = ["subnet-aaaa", "subnet-bbbb"]
  }

  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_subnet.private) == 0 && length(aws_nat_gateway.this) == 0
    error_message = "no network may be created when vpc_id is given"
  }

  assert {
    condition     = toset(aws_eks_cluster.this.vpc_config[0].subnet_ids) == toset(["subnet-aaaa", "subnet-bbbb"]) && aws_security_group.db.vpc_id == "vpc-0123456789abcdef0"
    error_message = "the cluster and database must use the given VPC and subnets"
  }
}
