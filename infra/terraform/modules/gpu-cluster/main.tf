data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  dns_suffix = data.aws_partition.current.dns_suffix
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  tags = merge(var.tags, {
    "mlplane.io/cluster" = var.cluster_name
    "managed-by"         = "terraform"
  })
}

# One customer-managed key for EKS secrets envelope encryption, the artifact bucket, the database
# storage and its master-password secret. The default key policy delegates to IAM in this account.
resource "aws_kms_key" "this" {
  description             = "mlplane ${var.cluster_name}: EKS secrets, MLflow artifacts and database"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.cluster_name}"
  target_key_id = aws_kms_key.this.key_id
}
