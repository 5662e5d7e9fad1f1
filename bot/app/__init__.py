"""The application: settings (the one reader of the environment), the composition root
(`bootstrap`), start-up and shutdown (`lifecycle`) and logging. Everything else is handed its
dependencies from here."""
