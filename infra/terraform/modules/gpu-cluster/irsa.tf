# ---------------------------------------------------------------------------------------------
# IRSA roles. Each trust policy admits exactly its Kubernetes service accounts (StringEquals on
# <issuer>:sub: one for MLflow and the autoscaler; the model servers' account in mlplane_namespace
# and each of model_server_namespaces) and only STS as audience (<issuer>:aud).
# Policies are built with jsonencode (not aws_iam_policy_document) so the module's tests can
# decode and assert them under a mocked provider.
# ---------------------------------------------------------------------------------------------

locals {
  oidc_issuer_host = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")

  # The chart creates the model servers' account in its release namespace and in serving.namespaces.
  model_server_namespaces = distinct(concat([var.mlplane_namespace], var.model_server_namespaces))

  irsa_subjects = {
    mlflow             = ["system:serviceaccount:${var.mlplane_namespace}:${var.mlflow_service_account}"]
    model_server       = [for ns in local.model_server_namespaces : "system:serviceaccount:${ns}:${var.model_server_service_account}"]
    cluster_autoscaler = ["system:serviceaccount:${var.cluster_autoscaler_namespace}:${var.cluster_autoscaler_service_account}"]
  }

  bucket_arn = aws_s3_bucket.artifacts.arn

  irsa_policies = {
    mlflow = [
      {
        Sid      = "ListArtifactBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket", "s3:GetBucketLocation"]
        Resource = local.bucket_arn
      },
      {
        Sid      = "ReadWriteArtifacts"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
        Resource = "${local.bucket_arn}/*"
      },
      {
        Sid      = "ReadDatabasePassword"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        Resource = aws_db_instance.mlflow.master_user_secret[0].secret_arn
      },
      {
        Sid      = "UseModuleKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
        Resource = aws_kms_key.this.arn
      },
    ]
    model_server = [
      {
        Sid      = "ListArtifactBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket", "s3:GetBucketLocation"]
        Resource = local.bucket_arn
      },
      {
        Sid      = "ReadArtifacts"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = "${local.bucket_arn}/*"
      },
      {
        Sid      = "DecryptArtifacts"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:DescribeKey"]
        Resource = aws_kms_key.this.arn
      },
    ]
    # The policy documented by cluster-autoscaler for AWS: read everywhere, scale only the
    # Auto Scaling groups tagged as owned by this cluster.
    cluster_autoscaler = [
      {
        Sid    = "Describe"
        Effect = "Allow"
        Action = [
          "autoscaling:DescribeAutoScalingGroups",
          "autoscaling:DescribeAutoScalingInstances",
          "autoscaling:DescribeLaunchConfigurations",
          "autoscaling:DescribeScalingActivities",
          "autoscaling:DescribeTags",
          "ec2:DescribeImages",
          "ec2:DescribeInstanceTypes",
          "ec2:DescribeLaunchTemplateVersions",
          "ec2:GetInstanceTypesFromInstanceRequirements",
          "eks:DescribeNodegroup",
        ]
        Resource = "*"
      },
      {
        Sid      = "ScaleOwnedGroups"
        Effect   = "Allow"
        Action   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
        Resource = "*"
        Condition = {
          StringEquals = { "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.cluster_name}" = "owned" }
        }
      },
    ]
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.irsa_subjects

  name = "${var.cluster_name}-${replace(each.key, "_", "-")}"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.this.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_issuer_host}:sub" = jsondecode(length(each.value) == 1 ? jsonencode(each.value[0]) : jsonencode(each.value))
          "${local.oidc_issuer_host}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy" "irsa" {
  for_each = local.irsa_policies

  name   = replace(each.key, "_", "-")
  role   = aws_iam_role.irsa[each.key].id
  policy = jsonencode({ Version = "2012-10-17", Statement = each.value })
}
