pub mod imgapi_server;
