-- Runs once, when the PostgreSQL volume of docker-compose.yml is created: a read-only role for
-- Grafana's "celery-jobmon history" data source. The exporter (role jobmon) creates the tables
-- later, hence default privileges rather than a grant on existing tables.
CREATE ROLE grafana LOGIN PASSWORD 'grafana';
GRANT CONNECT ON DATABASE jobmon TO grafana;
GRANT USAGE ON SCHEMA public TO grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE jobmon IN SCHEMA public GRANT SELECT ON TABLES TO grafana;
