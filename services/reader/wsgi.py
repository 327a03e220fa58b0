from services.reader.app import create_app

app = create_app()
