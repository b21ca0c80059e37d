output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Kubernetes API server endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_oidc_issuer_url" {
  description = "OIDC issuer of the cluster (IRSA)."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider for IRSA; use it in trust policies of further roles."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "region" {
  description = "AWS region of the cluster."
  value       = local.region
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${local.region} --name ${aws_eks_cluster.this.name}"
}

output "vpc_id" {
  description = "VPC of the cluster (created or given)."
  value       = local.vpc_id
}

output "private_subnet_ids" {
  description = "Private subnets of the cluster and database."
  value       = local.private_subnet_ids
}

output "kms_key_arn" {
  description = "KMS key encrypting EKS secrets, the artifact bucket and the database."
  value       = aws_kms_key.this.arn
}

output "gpu_node_group_names" {
  description = "EKS node group name of each GPU pool, by key of var.gpu_node_groups."
  value       = { for k, ng in aws_eks_node_group.gpu : k => ng.node_group_name }
}

output "artifact_bucket" {
  description = "S3 bucket holding MLflow artifacts."
  value       = aws_s3_bucket.artifacts.bucket
}

output "db_endpoint" {
  description = "Host name of the MLflow PostgreSQL database."
  value       = aws_db_instance.mlflow.address
}

output "db_port" {
  description = "Port of the MLflow PostgreSQL database."
  value       = aws_db_instance.mlflow.port
}

output "db_master_password_secret_arn" {
  description = "Secrets Manager secret (JSON with username and password) holding the database master password."
  value       = aws_db_instance.mlflow.master_user_secret[0].secret_arn
}

output "mlflow_role_arn" {
  description = "IAM role for the MLflow server's service account (S3 read/write, DB password secret)."
  value       = aws_iam_role.irsa["mlflow"].arn
}

output "model_server_role_arn" {
  description = "IAM role for model servers' service account (S3 read-only)."
  value       = aws_iam_role.irsa["model_server"].arn
}

output "cluster_autoscaler_role_arn" {
  description = "IAM role for the cluster autoscaler's service account."
  value       = aws_iam_role.irsa["cluster_autoscaler"].arn
}

output "mlplane_values" {
  description = "Values file for charts/mlplane: `terraform output -raw mlplane_values > mlplane-values.yaml`."
  value = templatefile("${path.module}/templates/mlplane-values.yaml.tftpl", {
    cluster_name                = aws_eks_cluster.this.name
    db_host                     = aws_db_instance.mlflow.address
    db_port                     = 5432
    db_name                     = aws_db_instance.mlflow.db_name
    db_username                 = var.db_username
    db_password_secret_arn      = aws_db_instance.mlflow.master_user_secret[0].secret_arn
    bucket                      = aws_s3_bucket.artifacts.bucket
    region                      = local.region
    mlflow_role_arn             = aws_iam_role.irsa["mlflow"].arn
    model_server_role_arn       = aws_iam_role.irsa["model_server"].arn
    model_server_account        = var.model_server_service_account
    model_server_namespaces     = [for ns in local.model_server_namespaces : ns if ns != var.mlplane_namespace]
    cluster_autoscaler_role_arn = aws_iam_role.irsa["cluster_autoscaler"].arn
  })
}
