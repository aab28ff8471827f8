# A consul-template configuration as a web appliance has one.
consul {
  address = "consul.service.consul:8500"
  token   = "not-a-real-token"
}

wait = "2s:10s"

default_delimiters {
  left  = "[["
  right = "]]"
}

template {
  source      = "templates/nginx.conf.ctmpl"
  destination = "/etc/nginx/nginx.conf"
  perms       = "0640"
  user        = "root"
  group       = "www-data"
  backup      = true
  command     = ["/usr/sbin/nginx", "-s", "reload"]
  command_timeout = "45s"
  error_on_missing_key = true
  function_denylist = ["plugin", "sprig_*"]
}

template {
  contents    = "{{ key \"service/redis/maxconns\" }}\n"
  destination = "/etc/redis/maxconns"
  perms       = 0600
  uid         = 999
  gid         = 999
  left_delimiter  = "{{"
  right_delimiter = "}}"
  exec {
    command = "systemctl reload redis || systemctl restart redis"
    timeout = "1m"
    splay   = "5s"
  }
  create_dest_dirs = false
  wait {
    min = "1s"
  }
}
