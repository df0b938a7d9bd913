from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route('/')
def index():
    return 'Hello from Flask'


@app.route('/echo', methods=['POST'])
def echo():
    return jsonify(json=request.get_json(), args=request.args.to_dict())


@app.route('/stream')
def stream():
    def generate():
        for i in range(3):
            yield 'part %d\n' % i
    return app.response_class(generate(), mimetype='text/plain')
