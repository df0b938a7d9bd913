import hashlib

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return HttpResponse('Hello from Django', content_type='text/plain')


def page(request):
    items = [{'name': 'item %d' % i, 'price': i * 1.5, 'tags': ['a', 'b', 'c'][: i % 4]} for i in range(30)]
    return render(request, 'page.html', {'title': 'rwsgi bench page', 'items': items, 'user': 'visitor'})


@csrf_exempt
def form(request):
    return JsonResponse({'method': request.method, 'fields': dict(request.POST.items())})


@csrf_exempt
def upload(request):
    f = request.FILES['file']
    data = f.read()
    return JsonResponse({'name': f.name, 'size': len(data), 'sha256': hashlib.sha256(data).hexdigest(),
                         'note': request.POST.get('note')})


def stream(request):
    def rows():
        for i in range(5):
            yield 'row %d\n' % i
    return StreamingHttpResponse(rows(), content_type='text/plain')


urlpatterns = [
    path('', hello),
    path('page/', page),
    path('form/', form),
    path('upload/', upload),
    path('stream/', stream),
]
