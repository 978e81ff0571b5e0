"""The action API over HTTP: routes, bearer auth, body limit, problem documents."""
