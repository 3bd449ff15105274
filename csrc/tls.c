int cma_tls_placeholder;
