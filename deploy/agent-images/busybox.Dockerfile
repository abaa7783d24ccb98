# bench/busybox:latest where a registry answers (docker-compose.yml builds it); scripts/build-images
# makes the same from the host's static busybox: busybox with root and nobody users.
FROM busybox:1.36.1
CMD ["/bin/sh"]
