#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672, guest/guest) and MariaDB
# (127.0.0.1:3306, root with an empty password) are running; install them
# from Debian packages when absent. With "--then CMD...", run CMD after.
set -euo pipefail

log() { echo "services: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		port_open "$1" && return 0
		sleep 0.2
	done
	log "$3 did not open port $1 within $2 s"
	return 1
}

apt_updated=
apt_install() {
	if [ -z "$apt_updated" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_rabbitmq() {
	port_open 5672 && { log "RabbitMQ is up"; return 0; }
	if ! command -v rabbitmq-server >/dev/null; then
		log "installing rabbitmq-server"
		apt_install rabbitmq-server
	fi
	log "starting RabbitMQ"
	rabbitmq-server -detached || true
	wait_port 5672 120 RabbitMQ
	rabbitmqctl await_startup >/dev/null 2>&1 || true
}

mariadb_root_tcp_ok() { mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; }

ensure_mariadb() {
	if ! port_open 3306; then
		if [ ! -x /usr/sbin/mariadbd ]; then
			log "installing mariadb-server"
			apt_install mariadb-server
		fi
		mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
		log "starting MariaDB"
		start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
		wait_port 3306 120 MariaDB
	else
		log "MariaDB is up"
	fi
	if ! mariadb_root_tcp_ok; then
		# A fresh Debian install lets root in through the unix socket only.
		log "allowing root with an empty password over TCP"
		mariadb -u root -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
	fi
	mariadb -h 127.0.0.1 -u root -e 'CREATE DATABASE IF NOT EXISTS test' >/dev/null
	# The test suite runs packages in parallel, each with its own databases
	# and connection pools (several management nodes per test): the default
	# of 151 connections is too few.
	mariadb -h 127.0.0.1 -u root -e 'SET GLOBAL max_connections = 2000' >/dev/null
}

ensure_rabbitmq
ensure_mariadb

if [ "${1:-}" = "--then" ]; then
	shift
	exec "$@"
fi
