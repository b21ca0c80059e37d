# ---------------------------------------------------------------------------------------------
# Managed node groups: one system (CPU) group and the GPU groups of var.gpu_node_groups
# ---------------------------------------------------------------------------------------------

locals {
  gpu_label = { "nvidia.com/gpu.present" = "true" }
  gpu_taint = { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }

  # Discovery tags for cluster-autoscaler's --node-group-auto-discovery.
  autoscaler_discovery_tags = {
    "k8s.io/cluster-autoscaler/enabled"             = "true"
    "k8s.io/cluster-autoscaler/${var.cluster_name}" = "owned"
  }

  gpu_node_groups = {
    for name, g in var.gpu_node_groups : name => merge(g, {
      labels = merge(g.labels, local.gpu_label, { "mlplane.io/node-pool" = name })
      # Node-template tags describe a node the group would create, so the autoscaler can scale a
      # group up from zero without a live node to copy labels, taints and GPU capacity from.
      autoscaler_tags = merge(
        local.autoscaler_discovery_tags,
        { for k, v in merge(g.labels, local.gpu_label, { "mlplane.io/node-pool" = name }) : "k8s.io/cluster-autoscaler/node-template/label/${k}" => v },
        {
          "k8s.io/cluster-autoscaler/node-template/taint/${local.gpu_taint.key}"      = "${local.gpu_taint.value}:NoSchedule"
          "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"          = tostring(g.gpus_per_node)
          "k8s.io/cluster-autoscaler/node-template/resources/ephemeral-storage"       = "${g.disk_size}Gi"
          "k8s.io/cluster-autoscaler/node-template/label/eks.amazonaws.com/nodegroup" = "${var.cluster_name}-gpu-${name}"
        },
      )
    })
  }

  # EKS does not copy node-group tags to the Auto Scaling group it creates; cluster-autoscaler
  # reads the ASG, so each tag is also put on the ASG (one resource per group and tag).
  gpu_asg_tags = merge([
    for name, g in local.gpu_node_groups : {
      for k, v in g.autoscaler_tags : "${name}|${k}" => { group = name, key = k, value = v }
    }
  ]...)
}

resource "aws_iam_role" "node" {
  name = "${var.cluster_name}-node"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.${local.dns_suffix}" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryReadOnly",
    "AmazonSSMManagedInstanceCore",
  ])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.key}"
}

resource "aws_eks_node_group" "system" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.cluster_name}-system"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = local.private_subnet_ids
  ami_type        = "AL2023_x86_64_STANDARD"
  capacity_type   = "ON_DEMAND"
  instance_types  = var.system_node_group.instance_types
  disk_size       = var.system_node_group.disk_size

  scaling_config {
    min_size     = var.system_node_group.min_size
    max_size     = var.system_node_group.max_size
    desired_size = var.system_node_group.desired_size
  }

  update_config {
    max_unavailable = 1
  }

  labels = { "mlplane.io/node-pool" = "system" }
  tags   = merge(local.tags, local.autoscaler_discovery_tags)

  lifecycle {
    # The cluster autoscaler owns the current size.
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_eks_addon.before_nodes]
}

resource "aws_eks_node_group" "gpu" {
  for_each = local.gpu_node_groups

  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.cluster_name}-gpu-${each.key}"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = local.private_subnet_ids
  ami_type        = each.value.ami_type
  capacity_type   = each.value.capacity_type
  instance_types  = each.value.instance_types
  disk_size       = each.value.disk_size

  scaling_config {
    min_size     = each.value.min_size
    max_size     = each.value.max_size
    desired_size = each.value.min_size
  }

  update_config {
    max_unavailable = 1
  }

  labels = each.value.labels

  # Matches the toleration mlplane renders: {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}.
  taint {
    key    = local.gpu_taint.key
    value  = local.gpu_taint.value
    effect = local.gpu_taint.effect
  }

  tags = merge(local.tags, each.value.autoscaler_tags)

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_eks_addon.before_nodes]
}

resource "aws_autoscaling_group_tag" "gpu" {
  for_each = local.gpu_asg_tags

  autoscaling_group_name = aws_eks_node_group.gpu[each.value.group].resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.value.key
    value               = each.value.value
    propagate_at_launch = false
  }
}
