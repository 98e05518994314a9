"""The demo function: greets whoever the event names, over the API or the HTTP trigger."""

import json
import logging

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def handler(event, context):
    if isinstance(event, dict) and event.get("version") == "2.0" and "requestContext" in event:
        # called through the HTTP trigger: answer like a function URL would
        name = (event.get("queryStringParameters") or {}).get("name", "world")
        print(f"HTTP {event['requestContext']['http']['method']} {event['rawPath']}")
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/json"},
            "body": json.dumps({"hello": name, "path": event["rawPath"]}),
        }
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    logger.info("greeting %s", name)
    print(f"hello from {context.function_name} v{context.function_version}")
    return {"hello": name, "request_id": context.aws_request_id}
